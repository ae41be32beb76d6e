"""Models behind one protocol (base.BaseModel); the Flax T5 and its configurations."""
from t5mtl.models.base import BaseModel
from t5mtl.models.config import T5Config
from t5mtl.models.configs import NAMED_CONFIGS, get_config
from t5mtl.models.encoder_decoder import DecodeConfig, EncoderDecoderModel, LossConfig
from t5mtl.models.init import count_params, init_params, param_shapes
from t5mtl.models.t5 import Transformer

__all__ = ["BaseModel", "T5Config", "NAMED_CONFIGS", "get_config", "DecodeConfig",
           "EncoderDecoderModel", "LossConfig", "Transformer", "count_params", "init_params",
           "param_shapes"]
