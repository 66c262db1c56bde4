"""Procedural NYU-like indoor scenes with exact, mutually consistent targets.

A room (floor, ceiling, four walls) holding a few boxes, spheres and
cylinders is ray-cast from a pinhole camera with a random pose. Every target
comes from the same z-buffer: z-depth in metres, camera-frame unit normals
(OpenCV axes: x right, y down, z forward), one semantic class per surface
kind, edges wherever the surface id changes (object boundaries and creases
between faces), and a shaded RGB image (albedo x Lambert lighting + noise).
Optional Kinect-like holes make depth and normals invalid (0) in places.

Everything is vectorised over pixels with numpy; a sample depends only on the
`numpy.random.Generator` it is given.
"""

import numpy as np

from ms_keras.data import geometry

CLASS_NAMES = ("floor", "wall", "ceiling", "box", "sphere", "cylinder")
FLOOR, WALL, CEILING, BOX, SPHERE, CYLINDER = range(6)
FOCAL_PER_WIDTH = 0.8  # focal length in pixels per image-width pixel
_FAR = 1e9


def camera_intrinsics(height, width):
    """`(fx, fy, cx, cy)` of the synthetic camera for an image size."""
    focal = FOCAL_PER_WIDTH * width
    return focal, focal, width / 2.0, height / 2.0


def pixel_rays(height, width):
    """Camera-frame ray directions `(h, w, 3)` with z = 1 (so t = z-depth)."""
    return geometry.pixel_rays(height, width, camera_intrinsics(height, width))


def _camera_rotation(yaw, pitch, roll):
    """World-from-camera rotation; world y is up, camera y is down."""
    forward = np.array([np.sin(yaw) * np.cos(pitch), np.sin(pitch),
                        np.cos(yaw) * np.cos(pitch)])
    right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    c, s = np.cos(roll), np.sin(roll)
    right, down = c * right + s * down, -s * right + c * down
    return np.stack([right, down, forward], axis=1)


class _Hits:
    """Nearest hit so far per ray: depth, world normal, surface id, class."""

    def __init__(self, n):
        self.t = np.full(n, _FAR, np.float32)
        self.normal = np.zeros((n, 3), np.float32)
        self.surface = np.full(n, -1, np.int32)
        self.label = np.zeros(n, np.int32)
        self.albedo = np.zeros((n, 3), np.float32)

    def offer(self, t, normal, surface, label, albedo):
        closer = (t > 1e-6) & (t < self.t)
        self.t[closer] = t[closer]
        self.normal[closer] = normal[closer] if normal.ndim == 2 else normal
        self.surface[closer] = (surface[closer] if np.ndim(surface)
                                else surface)
        self.label[closer] = label
        self.albedo[closer] = (albedo[closer] if np.ndim(albedo) == 2
                               else albedo)


def _hit_room(hits, origin, dirs, size, colors, rng):
    """Room interior: the ray leaves through the nearest plane it faces."""
    half = np.array([size[0] / 2, 0.0, size[2] / 2])
    lower = np.array([-half[0], 0.0, -half[2]])
    upper = np.array([half[0], size[1], half[2]])
    for axis in range(3):
        d = dirs[:, axis]
        with np.errstate(divide="ignore", invalid="ignore"):
            t_up = np.where(d > 1e-12, (upper[axis] - origin[axis]) / d, _FAR)
            t_low = np.where(d < -1e-12, (lower[axis] - origin[axis]) / d,
                             _FAR)
        for t, sign, side in ((t_up, -1.0, 1), (t_low, 1.0, 0)):
            normal = np.zeros(3)
            normal[axis] = sign
            if axis == 1:
                label = CEILING if side else FLOOR
            else:
                label = WALL
            surface = 2 * axis + side
            albedo = colors[surface]
            if label == FLOOR:
                points = origin + t[:, None] * dirs
                checker = (np.floor(points[:, 0] / 0.5)
                           + np.floor(points[:, 2] / 0.5)) % 2
                albedo = colors[surface] * (0.75 + 0.25 * checker[:, None])
            hits.offer(t, normal, surface, label, albedo)


def _hit_box(hits, origin, dirs, centre, half, angle, first_id, color):
    """Box resting on the floor, rotated by `angle` about the vertical."""
    c, s = np.cos(angle), np.sin(angle)
    to_box = np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]])
    o = to_box @ (origin - centre)
    d = dirs @ to_box.T
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / np.where(np.abs(d) < 1e-12, 1e-12, d)
        t1 = (-half - o) * inv
        t2 = (half - o) * inv
    t_near_axes = np.minimum(t1, t2)
    t_far = np.min(np.maximum(t1, t2), axis=1)
    entry_axis = np.argmax(t_near_axes, axis=1)
    t_near = np.max(t_near_axes, axis=1)
    hit = (t_near <= t_far) & (t_near > 0)
    rows = np.arange(len(dirs))
    normal_box = np.zeros_like(d)
    normal_box[rows, entry_axis] = -np.sign(d[rows, entry_axis])
    normal = normal_box @ to_box  # back to world (to_box is orthonormal)
    face = 2 * entry_axis + (normal_box[rows, entry_axis] > 0)
    hits.offer(np.where(hit, t_near, _FAR), normal, first_id + face, BOX,
               color)


def _hit_sphere(hits, origin, dirs, centre, radius, surface, color):
    oc = origin - centre
    a = np.sum(dirs * dirs, axis=1)
    b = 2.0 * dirs @ oc
    c = oc @ oc - radius * radius
    disc = b * b - 4 * a * c
    root = np.sqrt(np.maximum(disc, 0.0))
    t = np.where(disc > 0, (-b - root) / (2 * a), _FAR)
    normal = (origin + t[:, None] * dirs - centre) / radius
    hits.offer(t, normal, surface, SPHERE, color)


def _hit_cylinder(hits, origin, dirs, centre_xz, radius, height, first_id,
                  color):
    """Vertical cylinder standing on the floor: side and top cap."""
    ox, oz = origin[0] - centre_xz[0], origin[2] - centre_xz[1]
    dx, dz = dirs[:, 0], dirs[:, 2]
    a = dx * dx + dz * dz
    b = 2 * (ox * dx + oz * dz)
    c = ox * ox + oz * oz - radius * radius
    disc = b * b - 4 * a * c
    with np.errstate(divide="ignore", invalid="ignore"):
        t_side = np.where((disc > 0) & (a > 1e-12),
                          (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a), _FAR)
    y_side = origin[1] + t_side * dirs[:, 1]
    t_side = np.where((y_side >= 0) & (y_side <= height), t_side, _FAR)
    side_points = origin + t_side[:, None] * dirs
    side_normal = np.stack([side_points[:, 0] - centre_xz[0],
                            np.zeros_like(t_side),
                            side_points[:, 2] - centre_xz[1]], 1) / radius
    hits.offer(t_side, side_normal, first_id, CYLINDER, color)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_top = np.where(np.abs(dirs[:, 1]) > 1e-12,
                         (height - origin[1]) / dirs[:, 1], _FAR)
    top = origin + t_top[:, None] * dirs
    inside = ((top[:, 0] - centre_xz[0]) ** 2
              + (top[:, 2] - centre_xz[1]) ** 2) <= radius * radius
    hits.offer(np.where(inside & (origin[1] > height), t_top, _FAR),
               np.array([0.0, 1.0, 0.0]), first_id + 1, CYLINDER, color)


def _place_objects(rng, room, camera):
    """Random objects resting on the floor, none within 0.4 m of the camera."""
    objects = []
    attempts = 0
    count = rng.integers(3, 7)
    while len(objects) < count and attempts < 50:
        attempts += 1
        kind = rng.integers(3)
        x = rng.uniform(-room[0] / 2 + 0.4, room[0] / 2 - 0.4)
        z = rng.uniform(-room[2] / 2 + 0.4, room[2] / 2 - 0.4)
        size = rng.uniform(0.2, 0.6)
        if np.hypot(x - camera[0], z - camera[2]) < size + 0.6:
            continue
        color = rng.uniform(0.15, 0.95, 3)
        if kind == 0:
            half = np.array([size, rng.uniform(0.2, 0.5), rng.uniform(0.2,
                                                                      0.6)])
            objects.append(("box", np.array([x, half[1], z]), half,
                            rng.uniform(0, np.pi), color))
        elif kind == 1:
            objects.append(("sphere", np.array([x, size, z]), size, color))
        else:
            objects.append(("cylinder", (x, z), size * 0.6,
                            rng.uniform(0.3, 1.4), color))
    return objects


def _kinect_holes(rng, depth, normals, rays):
    """Invalid blobs, grazing-angle and far pixels, as a Kinect produces."""
    height, width = depth.shape
    v, u = np.mgrid[0:height, 0:width]
    holes = np.zeros(depth.shape, bool)
    for _ in range(rng.integers(0, 4)):
        cu, cv = rng.uniform(0, width), rng.uniform(0, height)
        ru, rv = rng.uniform(0.03, 0.12) * width, rng.uniform(0.03, 0.12) * height
        holes |= ((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2 < 1
    view = rays / np.linalg.norm(rays, axis=-1, keepdims=True)
    grazing = np.abs(np.sum(normals * view, axis=-1)) < 0.12
    return holes | grazing | (depth > 9.5)


def render_scene(rng, height, width, holes=True):
    """Renders one scene.

    Args:
        rng: a `numpy.random.Generator`; the sample is a function of it alone.
        height: image height in pixels.
        width: image width in pixels.
        holes: whether to punch Kinect-like invalid regions into depth and
            normals.

    Returns:
        A dict with `image` uint8 (h, w, 3), `segmentation` uint8 (h, w)
        (classes of `CLASS_NAMES`), `depth` float32 (h, w) z-depth in metres
        (0 = invalid), `normals` float32 (h, w, 3) camera-frame unit normals
        (all-zero = invalid) and `edges` uint8 (h, w) in {0, 1}.
    """
    room = np.array([rng.uniform(3.0, 6.0), rng.uniform(2.4, 3.0),
                     rng.uniform(3.0, 7.0)])
    camera = np.array([rng.uniform(-room[0] / 2 + 0.5, room[0] / 2 - 0.5),
                       rng.uniform(1.1, 1.8),
                       rng.uniform(-room[2] / 2 + 0.5, room[2] / 2 - 0.5)])
    rotation = _camera_rotation(rng.uniform(0, 2 * np.pi),
                                np.deg2rad(rng.uniform(-25, 5)),
                                np.deg2rad(rng.uniform(-4, 4)))
    rays = pixel_rays(height, width)
    rays = rays.astype(np.float32)
    rotation = rotation.astype(np.float32)
    camera = camera.astype(np.float32)
    dirs = rays.reshape(-1, 3) @ rotation.T
    hits = _Hits(len(dirs))
    room_colors = rng.uniform(0.35, 0.95, (6, 3))
    _hit_room(hits, camera, dirs, room, room_colors, rng)
    next_id = 6
    for obj in _place_objects(rng, room, camera):
        if obj[0] == "box":
            _hit_box(hits, camera, dirs, obj[1], obj[2], obj[3], next_id,
                     obj[4])
            next_id += 6
        elif obj[0] == "sphere":
            _hit_sphere(hits, camera, dirs, obj[1], obj[2], next_id, obj[3])
            next_id += 1
        else:
            _hit_cylinder(hits, camera, dirs, obj[1], obj[2], obj[3], next_id,
                          obj[4])
            next_id += 2
    depth = hits.t.reshape(height, width)
    normals = (hits.normal @ rotation).reshape(height, width, 3)
    # Surfaces face the camera; flip any normal that points away.
    facing = np.sum(normals * rays, axis=-1) > 0
    normals[facing] *= -1
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    surface = hits.surface.reshape(height, width)

    light = np.array([rng.uniform(-1, 1), room[1] - 0.2, rng.uniform(-1, 1)])
    points = camera + dirs * hits.t[:, None]
    to_light = light - points
    distance = np.linalg.norm(to_light, axis=1, keepdims=True)
    lambert = np.clip(np.sum(hits.normal * to_light / distance, axis=1), 0, 1)
    falloff = 1.0 / (1.0 + 0.04 * distance[:, 0] ** 2)
    shade = 0.25 + 0.85 * lambert * falloff
    image = hits.albedo * shade[:, None]
    image = image.reshape(height, width, 3) + rng.normal(0, 0.02, (height,
                                                                  width, 3))
    image = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)

    edges = geometry.label_edges(surface)
    if holes:
        invalid = _kinect_holes(rng, depth, normals, rays)
        depth = np.where(invalid, 0.0, depth)
        normals = np.where(invalid[..., None], 0.0, normals)
    return {
        "image": image,
        "segmentation": hits.label.reshape(height, width).astype(np.uint8),
        "depth": depth.astype(np.float32),
        "normals": normals.astype(np.float32),
        "edges": edges,
    }


def normals_from_depth(depth):
    """Camera-frame unit normals recomputed from a synthetic z-depth map."""
    height, width = depth.shape
    return geometry.normals_from_depth(depth,
                                       camera_intrinsics(height, width))
