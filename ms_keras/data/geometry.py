"""Camera geometry shared by the synthetic scenes and the NYUv2 converter."""

import numpy as np

# Kinect colour-camera intrinsics of NYUv2 at 640x480 (the NYU toolbox's
# camera_params.m): fx, fy, cx, cy.
NYU_KINECT = (518.8579, 519.4696, 325.5824, 253.7362)


def pixel_rays(height, width, intrinsics):
    """Camera-frame ray directions `(h, w, 3)` with z = 1 (so t = z-depth).

    OpenCV axes: x right, y down, z forward; pixel centres at +0.5.
    """
    fx, fy, cx, cy = intrinsics
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    return np.stack([(u + 0.5 - cx) / fx, (v + 0.5 - cy) / fy,
                     np.ones_like(u)], axis=-1)


def normals_from_depth(depth, intrinsics):
    """Camera-frame unit normals from a z-depth map.

    Back-projects every pixel and crosses the central-difference tangents.
    Border pixels, pixels without depth and pixels next to missing depth are
    left zero (invalid).

    Args:
        depth: `(h, w)` z-depth in metres, 0 = invalid.
        intrinsics: `(fx, fy, cx, cy)` in pixels.

    Returns:
        `(h, w, 3)` float32 unit normals facing the camera.
    """
    height, width = depth.shape
    points = pixel_rays(height, width, intrinsics) * depth[..., None]
    du = np.zeros_like(points)
    dv = np.zeros_like(points)
    du[:, 1:-1] = points[:, 2:] - points[:, :-2]
    dv[1:-1, :] = points[2:, :] - points[:-2, :]
    normals = np.cross(dv, du)
    norm = np.linalg.norm(normals, axis=-1, keepdims=True)
    normals = np.where(norm > 0, normals / np.maximum(norm, 1e-12), 0.0)
    facing = np.sum(normals * points, axis=-1) > 0
    normals[facing] *= -1
    valid = depth > 0
    neighbours = valid.copy()
    neighbours[:, 1:-1] &= valid[:, 2:] & valid[:, :-2]
    neighbours[1:-1, :] &= valid[2:, :] & valid[:-2, :]
    neighbours[[0, -1], :] = False
    neighbours[:, [0, -1]] = False
    return np.where(neighbours[..., None], normals, 0.0).astype(np.float32)


def label_edges(*label_maps):
    """1 where any map changes between 4-neighbours (both sides marked)."""
    edges = np.zeros(label_maps[0].shape, bool)
    for labels in label_maps:
        vertical = labels[1:] != labels[:-1]
        horizontal = labels[:, 1:] != labels[:, :-1]
        edges[1:] |= vertical
        edges[:-1] |= vertical
        edges[:, 1:] |= horizontal
        edges[:, :-1] |= horizontal
    return edges.astype(np.uint8)
