"""Backbones, heads and the multi-task model."""

from ms_keras.models.backbone import BACKBONES
from ms_keras.models.backbone import build_backbone
from ms_keras.models.multitask import MultiTaskModel
from ms_keras.models.multitask import build_multitask_model

__all__ = ["BACKBONES", "MultiTaskModel", "build_backbone",
           "build_multitask_model"]
