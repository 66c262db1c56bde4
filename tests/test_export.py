"""The export binary and its verification, on a finished meta-sparsity run."""

import json
import os

import keras
import numpy as np
import pytest
from absl.testing import flagsaver

from ms_keras import export
from ms_keras import exporting
from tests.helpers import serve_without_ms_keras
from tests.helpers import assert_flag_error
from tests.helpers import read


def run_export(model_dir, output_dir, **overrides):
    values = dict(model_dir=model_dir, output_dir=output_dir,
                  latency_repeats=3, verify_images=8)
    values.update(overrides)
    with flagsaver.flagsaver(**values):
        export.main(["export"])


@pytest.fixture(scope="module")
def exported(meta_run, tmp_path_factory):
    output_dir = str(tmp_path_factory.mktemp("export") / "out")
    run_export(meta_run, output_dir, quantize="dynamic_range")
    return output_dir


def test_export_writes_verified_slim_artefacts(meta_run, exported):
    assert sorted(os.listdir(exported)) == [
        "export_report.json", "model.tflite", "model_dynamic_range.tflite",
        "saved_model"]
    report = read(exported, "export_report.json")
    for name in ("keras_slim", "saved_model", "tflite"):
        assert report["max_abs_difference"][name] <= 1e-4
    assert "tflite_dynamic_range" in report["max_abs_difference"]
    backbone = report["backbone"]
    assert backbone["parameters_slim"] == backbone["parameters_structural"]
    assert backbone["parameters_slim"] < backbone["parameters_dense"]
    sparsity = read(meta_run, "metrics.json")["sparsity"]
    assert backbone["flops_speedup"] == pytest.approx(
        sparsity["flops_speedup"])
    for fmt in ("saved_model", "tflite"):
        for table in (report["latency_ms"], backbone["latency_ms"]):
            assert set(table[fmt]["dense"]) == {"1", "8"}
            for batch in ("1", "8"):
                assert table[fmt]["speedup"][batch] == pytest.approx(
                    table[fmt]["dense"][batch] / table[fmt]["slim"][batch],
                    rel=1e-3)
    assert report["tasks"] == ["depth", "segmentation"]


def trained_outputs(meta_run, images):
    """The trained (masked, dense-shaped) Keras model's outputs."""
    network = keras.saving.load_model(os.path.join(meta_run, "model.keras"))
    return {name: np.asarray(value)
            for name, value in network(images, training=False).items()}


def test_saved_model_reloads_without_ms_keras_and_matches(meta_run,
                                                          exported,
                                                          tmp_path):
    images = np.random.default_rng(3).uniform(size=(3, 32, 32, 3)).astype(
        np.float32)
    served = serve_without_ms_keras(os.path.join(exported, "saved_model"),
                                    images, tmp_path)
    expected = trained_outputs(meta_run, images)
    assert sorted(served.files) == sorted(expected) == ["depth",
                                                        "segmentation"]
    for name in expected:
        np.testing.assert_allclose(served[name], expected[name], atol=1e-4)


def test_tflite_model_reloads_and_matches(meta_run, exported):
    import tensorflow as tf
    images = np.random.default_rng(4).uniform(size=(2, 32, 32, 3)).astype(
        np.float32)
    expected = trained_outputs(meta_run, images)
    interpreter = tf.lite.Interpreter(
        model_path=os.path.join(exported, "model.tflite"))
    interpreter.allocate_tensors()
    (source,) = interpreter.get_input_details()
    for i, image in enumerate(images):
        interpreter.set_tensor(source["index"], image[None])
        interpreter.invoke()
        outputs = {}
        for detail in interpreter.get_output_details():
            outputs[detail["shape"][-1]] = interpreter.get_tensor(
                detail["index"])[0]
        # Outputs are told apart by their channels (depth 1, classes many).
        for name, value in expected.items():
            np.testing.assert_allclose(outputs[value.shape[-1]], value[i],
                                       atol=1e-4)


def test_backbone_alone_exports_features(meta_run, tmp_path):
    output_dir = str(tmp_path / "bb")
    run_export(meta_run, output_dir, tasks=["none"], format=["tflite"])
    assert sorted(os.listdir(output_dir)) == ["export_report.json",
                                             "model.tflite"]
    report = read(output_dir, "export_report.json")
    assert report["tasks"] == []
    assert report["max_abs_difference"]["tflite"] <= 1e-4


def test_failed_verification_writes_nothing(meta_run, tmp_path):
    network = keras.saving.load_model(os.path.join(meta_run, "model.keras"))
    images = np.random.default_rng(0).uniform(size=(8, 32, 32, 3)).astype(
        np.float32)
    output_dir = tmp_path / "out"
    with pytest.raises(export.VerificationError, match="nothing was"):
        exporting.export_run(network, images, str(output_dir),
                            formats=("saved_model",), tolerance=-1.0,
                            repeats=1)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("overrides,message", [
    (dict(quantize="dynamic_range", format=["saved_model"]),
     "--quantize=dynamic_range needs --format to include tflite"),
    (dict(tasks=["edges"]), "the run has no head for edges"),
    (dict(model_dir="/no/run"), "no such directory"),
])
def test_bad_export_requests_fail_cleanly(meta_run, tmp_path, capsys,
                                          overrides, message):
    values = {"model_dir": meta_run, **overrides}
    with pytest.raises(SystemExit) as exit_info:
        run_export(values.pop("model_dir"), str(tmp_path / "o"), **values)
    assert exit_info.value.code == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv,message", [
    (["--format=onnx"], "--format=onnx: expected one or both of"),
    (["--format=saved_model,tflite,coreml"], "--format=saved_model,tflite,"),
    (["--latency_batch_sizes=0"], "--latency_batch_sizes=0"),
    (["--verify_images=0"], "--verify_images"),
    (["--tolerance=-1"], "--tolerance"),
])
def test_bad_export_flags_give_one_line(argv, message, capsys):
    assert_flag_error("export", argv, message, capsys)


def test_existing_output_dir_is_never_overwritten(meta_run, tmp_path,
                                                  capsys):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit):
        run_export(meta_run, str(tmp_path / "o"))
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "o" / "keep.txt").read_text() == "mine"


def test_report_records_the_request_and_positive_latencies(exported):
    with open(os.path.join(exported, "export_report.json")) as f:
        report = json.load(f)
    assert report["formats"] == ["saved_model", "tflite"]
    assert report["tolerance"] == 1e-4 and report["verified_on_images"] == 8
    for fmt, table in report["latency_ms"].items():
        for which in ("dense", "slim"):
            values = list(table[which].values())
            assert values and all(np.isfinite(v) and v > 0 for v in values)


def test_verification_is_relative_to_the_outputs_scale():
    report = {"max_abs_difference": {}}
    large = {"value": np.array([[200.0], [-3.0]])}
    # 2e-4 off outputs of 200 is float32's last bits: within 1e-4 of them.
    exporting._verify("tflite", large, {"value": large["value"] + 2e-4},
                      1e-4, report)
    with pytest.raises(exporting.VerificationError, match="scale 200"):
        exporting._verify("tflite", large, {"value": large["value"] + 0.03},
                          1e-4, report)
    # Outputs below 1 are held to the tolerance itself.
    small = {"value": np.array([[0.01]])}
    with pytest.raises(exporting.VerificationError):
        exporting._verify("tflite", small, {"value": small["value"] + 2e-4},
                          1e-4, report)
