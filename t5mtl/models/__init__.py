"""Flax T5 models and their configurations."""
from t5mtl.models.config import T5Config
from t5mtl.models.configs import NAMED_CONFIGS, get_config
from t5mtl.models.t5 import Transformer
from t5mtl.models.init import count_params, init_params, param_shapes

__all__ = ["T5Config", "NAMED_CONFIGS", "get_config", "Transformer", "count_params",
           "init_params", "param_shapes"]
