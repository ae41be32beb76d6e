"""Parameter-efficient adaptation of a frozen model: one module per method,
each plugged into a model seam and selected by gin (docs/peft.md)."""
from t5mtl.peft.lora import LoRA
from t5mtl.peft.prompt_tuning import PromptTuning
from t5mtl.peft.schema_prompts import SchemaPrompts

__all__ = ["LoRA", "PromptTuning", "SchemaPrompts"]
