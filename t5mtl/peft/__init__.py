"""Parameter-efficient adaptation of a frozen model: one module per method,
each plugged into a model seam and selected by gin (docs/peft.md)."""
from t5mtl.peft.attempt import Attempt
from t5mtl.peft.hyperprompt import HyperPrompt
from t5mtl.peft.lora import LoRA
from t5mtl.peft.match_prompt import TaskPrompts
from t5mtl.peft.prompt_tuning import PromptTuning
from t5mtl.peft.schema_prompts import SchemaPrompts

__all__ = ["Attempt", "HyperPrompt", "LoRA", "PromptTuning", "SchemaPrompts",
           "TaskPrompts"]
