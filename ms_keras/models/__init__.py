"""Backbones, heads and the multi-task model."""

from ms_keras.models.backbone import BACKBONES
from ms_keras.models.backbone import build_backbone
from ms_keras.models.multitask import backbone_of
from ms_keras.models.multitask import build_multitask_model
from ms_keras.models.multitask import head_of

__all__ = ["BACKBONES", "backbone_of", "build_backbone", "build_multitask_model",
           "head_of"]
