"""The default export runs without torch, and writes the encoder the torch-read export wrote.

The export runs in a subprocess in which torch, transformers and sentence-transformers cannot be imported (as in a
``pip install semroute`` without the export extra). Its fp32 graph is compared with the session's encoder (on the
developers' machines: the one exported before the export stopped reading weights through torch) to 1e-5, and its
int8 graph must carry the same quantization parameters.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from semroute.encoder import FP32_MODEL_FILE, META_FILE, MODEL_FILE, OnnxEncoder

BLOCK_TORCH = textwrap.dedent(
    """
    import sys
    for name in ("torch", "transformers", "sentence_transformers"):
        sys.modules[name] = None  # import raises ImportError, as when the package is not installed
    """
)

TEXTS = [
    "how do I get a refund",
    "write a python function that parses a CSV file and returns each row as a dictionary",
    "hi",
    "translate 'good morning' to German",
    "what does clause 7 of my tenancy agreement mean for a deposit dispute " * 6,
]


def _run_without_torch(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _quant_params(path: Path) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    return {
        i.name: numpy_helper.to_array(i)
        for i in m.graph.initializer
        if i.name.endswith(("_scale", "_zero_point", "_quantized"))
    }


@pytest.mark.slow
def test_default_export_needs_no_torch_and_matches(encoder_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "enc"
    proc = _run_without_torch(
        f"""
        from semroute.export import export_encoder
        export_encoder({str(out)!r})
        print("torch imported:", "torch" in {{k for k, v in sys.modules.items() if v is not None}})
        """
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "torch imported: False" in proc.stdout
    assert json.loads((out / META_FILE).read_text())["graph"] == "lean"

    want = OnnxEncoder(encoder_dir, threads=1, model_file=FP32_MODEL_FILE).encode(TEXTS).vectors
    got = OnnxEncoder(out, threads=1, model_file=FP32_MODEL_FILE).encode(TEXTS).vectors
    assert np.abs(got - want).max() <= 1e-5

    ref, new = _quant_params(encoder_dir / MODEL_FILE), _quant_params(out / MODEL_FILE)
    assert len(ref) > 100 and ref.keys() == new.keys()
    for name, value in ref.items():
        assert np.array_equal(value, new[name]), name
    np.testing.assert_allclose(OnnxEncoder(out, threads=1).encode(TEXTS).vectors,
                               OnnxEncoder(encoder_dir, threads=1).encode(TEXTS).vectors, atol=1e-6)


def test_a_model_to_trace_without_torch_is_a_clear_error(tmp_path: Path) -> None:
    """A model the lean writer does not describe needs the export extra: say so, write nothing."""
    from semroute.export import default_model_path

    src = default_model_path()
    model = tmp_path / "roberta-ish"
    model.mkdir()
    for f in src.iterdir():
        if f.is_file() and f.name != "config.json":
            (model / f.name).symlink_to(f)
    (model / "1_Pooling").mkdir()
    (model / "1_Pooling" / "config.json").symlink_to(src / "1_Pooling" / "config.json")
    cfg = json.loads((src / "config.json").read_text())
    (model / "config.json").write_text(json.dumps(cfg | {"model_type": "roberta"}))
    out = tmp_path / "out"
    proc = _run_without_torch(
        f"""
        from semroute.errors import EncoderError
        from semroute.export import export_encoder
        try:
            export_encoder({str(out)!r}, model={str(model)!r})
        except EncoderError as e:
            print("EncoderError:", e)
        """
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "EncoderError:" in proc.stdout and "semroute[export]" in proc.stdout, proc.stdout
    assert not out.exists()


def test_a_model_with_modules_the_graph_does_not_compute_is_refused(tmp_path: Path) -> None:
    from semroute._model_files import read_model_dir
    from semroute.errors import EncoderError
    from semroute.export import default_model_path

    src = default_model_path()
    modules = json.loads((src / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    (tmp_path / "config.json").symlink_to(src / "config.json")
    with pytest.raises(EncoderError, match=r"modules\.json: has sentence_transformers\.models\.Dense"):
        read_model_dir(tmp_path)


def test_max_tokens_and_dim_read_as_sentence_transformers_reads_them() -> None:
    from sentence_transformers import SentenceTransformer

    from semroute._model_files import read_model_dir
    from semroute.export import default_model_path

    files = read_model_dir(default_model_path())
    st = SentenceTransformer(str(default_model_path()), device="cpu")
    assert (files.max_tokens, files.dim) == (st.max_seq_length, st.get_embedding_dimension()) == (256, 384)


def test_the_build_extra_and_make_serve_install_no_torch() -> None:
    import tomllib

    repo = Path(__file__).resolve().parents[1]
    build = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["optional-dependencies"]["build"]
    names = {d.split(">")[0].split("=")[0].split("[")[0].strip().lower() for d in build}
    assert names == {"onnx", "safetensors"}
    make = (repo / "Makefile").read_text()
    serve_recipe = make[make.index("install-serve:"):make.index("install-export:")]
    assert "TORCH" not in serve_recipe and "--no-deps" in serve_recipe
    assert "bundle: install-serve $(MODEL_DIR)/model.safetensors" in make
