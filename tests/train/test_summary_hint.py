"""The end-of-run text offers `t5mtl infer` only for models that command can
run (text in, text out: EncoderDecoderModel and its subclasses)."""
from t5mtl.models.configs import get_config
from t5mtl.models.dual_encoder import DualEncoder
from t5mtl.models.encoder_decoder import EncoderDecoderModel
from t5mtl.train import model_dir as model_dir_lib
from t5mtl.train.summary import summarize

SUMMARY = {"step": 3, "loss": 1.25, "eval": {}, "finished": False}


def _summary_for(tmp_path, name, model):
    path = str(tmp_path / name)
    model_dir_lib.write_model_json(path, model, vocabulary={"kind": "byte"})
    return summarize(path, SUMMARY)


def test_text_to_text_model_gets_the_infer_hint(tmp_path):
    text = _summary_for(tmp_path, "t5", EncoderDecoderModel(get_config("t5_tiny")))
    assert "trained to step 3; last train loss 1.2500" in text
    assert "try it:     t5mtl infer --model_dir" in text


def test_dual_encoder_gets_no_infer_hint(tmp_path):
    text = _summary_for(tmp_path, "dual", DualEncoder(get_config("t5_tiny")))
    assert "trained to step 3; last train loss 1.2500" in text
    assert "checkpoint:" in text
    assert "t5mtl infer" not in text
