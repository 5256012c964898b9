"""`rxt_edge.package_writer`: a package appears whole or not at all, and `overwrite` replaces only a package.

Fast: the packages here hold one-node stub graphs (the writer reads each graph's operators into the
manifest, nothing more), so no model is exported. The CLI cases of issue 20 (export/quantize with a mistyped `-o`) are in test_export.py and
test_quantize.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from rxt_edge import contract
from rxt_edge.manifest import load_manifest
from rxt_edge.package_writer import PackageWriteError, PackageWriter, check_destination

DIMS = contract.ModelDims(
    vocab_size=32,
    dim=8,
    decoder_layers=1,
    memory_layers=1,
    stm_slots=2,
    head_dim=4,
    self_kv_heads=1,
    cross_kv_heads=1,
    max_seq_len=16,
)


def _stub_graph(path: Path, name: str) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], name, [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))


def _fill(writer: PackageWriter, tag: str = "new") -> dict:
    """Stub files and the manifest JSON naming them."""
    graphs = {}
    for name in contract.GRAPH_NAMES:
        _stub_graph(writer.path(f"{name}.onnx"), f"{tag}_{name}")
        graphs[name] = writer.graph_entry(name, DIMS, "fp32", "float32")
    writer.path("initial_stm.npy").write_bytes(tag.encode())
    writer.path("tokenizer.json").write_bytes(b"{}")
    return {
        "format": "rxt-edge-package",
        "format_version": 1,
        "model": DIMS.to_json(),
        "special_tokens": {"pad": 0, "bos": 1, "eos": 2, "query": 3, "answer": 4},
        "tokenizer": {"kind": "tokenizers", **writer.file_entry("tokenizer.json", size=False)},
        "initial_stm": {**writer.file_entry("initial_stm.npy", size=False), "source": "checkpoint"},
        "graphs": graphs,
        "precision": "fp32",
        "opset": 18,
        "quantization": None,
        "source": {"format": "native", "fingerprint": "0" * 64, "path": "ckpt"},
    }


def _write(output: Path, tag: str = "new", **kw) -> Path:
    with PackageWriter(output, **kw) as writer:
        writer.commit(_fill(writer, tag))
    return output


def _tree(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()
    }


def test_commit_writes_a_loadable_package_and_nothing_else(tmp_path):
    pkg = _write(tmp_path / "a" / "pkg")
    manifest = load_manifest(pkg)
    assert manifest.graphs[contract.DECODER].size == (pkg / "decoder.onnx").stat().st_size
    assert onnx.load(str(pkg / "decoder.onnx")).graph.name == "new_decoder"
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["pkg"]  # no staging left beside it


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_failure_or_ctrl_c_leaves_nothing_and_keeps_the_old_package(tmp_path, exc):
    new = tmp_path / "deep" / "er" / "pkg"
    with pytest.raises(type(exc)), PackageWriter(new) as writer:
        _fill(writer)
        raise exc
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # staging and created parents gone

    old = _write(tmp_path / "pkg", "old")
    before = _tree(old)
    with pytest.raises(type(exc)), PackageWriter(old, overwrite=True) as writer:
        _fill(writer)
        raise exc
    assert _tree(old) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]


def test_overwrite_replaces_a_package_the_writer_made(tmp_path):
    pkg = _write(tmp_path / "pkg", "old")
    _write(pkg, "new", overwrite=True)
    assert onnx.load(str(pkg / "decoder.onnx")).graph.name == "new_decoder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]


def test_existing_output_needs_overwrite(tmp_path):
    pkg = _write(tmp_path / "pkg", "old")
    with pytest.raises(PackageWriteError, match="already exists; pass --overwrite"):
        PackageWriter(pkg)


def _user_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "thesis.txt").write_text("years of work")
    (path / "sub").mkdir()
    (path / "sub" / "notes.md").write_text("more")
    return path


@pytest.mark.parametrize(
    "make, needle",
    [
        (_user_dir, "has no manifest.json"),
        (
            lambda p: _user_dir(p).joinpath("manifest.json").write_text("{not json"),
            "not a valid model package",
        ),
        (lambda p: _write(p, "old").joinpath("thesis.txt").write_text("mine"), "not part of the package"),
        (lambda p: _write(p, "old").joinpath("extra").mkdir(), r"not part of the package \(extra\)"),
        (lambda p: p.write_text("a file"), "not a directory"),
    ],
    ids=["user-dir", "bad-manifest", "package-plus-a-file", "package-plus-a-dir", "a-file"],
)
def test_overwrite_refuses_what_is_not_a_package_before_any_work(tmp_path, make, needle):
    target = tmp_path / "somedir"
    make(target)
    before = _tree(target) if target.is_dir() else target.read_bytes()
    with pytest.raises(PackageWriteError, match=needle) as info:
        PackageWriter(target, overwrite=True)
    assert "--overwrite replaces only a model package" in str(info.value)
    assert (_tree(target) if target.is_dir() else target.read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["somedir"]  # no staging was made


def test_overwrite_refuses_a_symlink_to_a_package(tmp_path):
    pkg = _write(tmp_path / "pkg", "old")
    link = tmp_path / "link"
    link.symlink_to(pkg, target_is_directory=True)
    with pytest.raises(PackageWriteError, match="symbolic link"):
        PackageWriter(link, overwrite=True)
    assert link.is_symlink() and (pkg / "manifest.json").is_file()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX FIFOs")
def test_a_fifo_named_manifest_is_refused_without_blocking(tmp_path):
    target = tmp_path / "pkg"
    target.mkdir()
    os.mkfifo(target / "manifest.json")
    with pytest.raises(PackageWriteError, match="not a regular file"):
        PackageWriter(target, overwrite=True)


@pytest.mark.parametrize(
    "output, how", [("models/pkg", "is"), ("models", "contains"), ("models/pkg/q8", "is inside")]
)
def test_output_may_not_be_contain_or_lie_inside_a_source(tmp_path, monkeypatch, output, how):
    source = _write(tmp_path / "models" / "pkg", "src")
    sibling = _write(tmp_path / "models" / "other", "sib")
    before = {p: _tree(p) for p in (source, sibling)}
    monkeypatch.chdir(tmp_path)  # relative paths, as typed on a command line
    with pytest.raises(PackageWriteError, match=f"{how} the source"):
        PackageWriter(output, overwrite=True, sources=["models/pkg"])
    with pytest.raises(PackageWriteError, match=f"{how} the source"):  # absolute or through a symlink
        (tmp_path / "alias").symlink_to(tmp_path / "models", target_is_directory=True)
        check_destination(tmp_path / output, overwrite=True, sources=[tmp_path / "alias" / "pkg"])
    assert {p: _tree(p) for p in (source, sibling)} == before


def test_a_destination_that_appears_during_the_work_is_not_replaced(tmp_path):
    """The check is repeated at commit: a directory someone made meanwhile is neither merged nor replaced."""
    out = tmp_path / "pkg"
    writer = PackageWriter(out, overwrite=True)
    manifest = _fill(writer)
    _user_dir(out)
    with pytest.raises(PackageWriteError, match="has no manifest.json"):
        writer.commit(manifest)
    assert sorted(_tree(out)) == ["sub/notes.md", "thesis.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]


def test_an_interrupted_swap_puts_the_old_package_back(tmp_path, monkeypatch):
    pkg = _write(tmp_path / "pkg", "old")
    before = _tree(pkg)
    real = os.replace
    into_place = []

    def replace(src, dst):
        if Path(dst) == pkg:
            into_place.append(Path(src).name)
            if len(into_place) == 1:  # the old package is aside, the new one not yet in place
                raise KeyboardInterrupt
        real(src, dst)

    with pytest.raises(KeyboardInterrupt), PackageWriter(pkg, overwrite=True) as writer:
        manifest = _fill(writer)
        monkeypatch.setattr(os, "replace", replace)
        writer.commit(manifest)
    monkeypatch.undo()
    assert len(into_place) == 2 and into_place[1].endswith(".old")  # the interrupted swap, then put back
    assert _tree(pkg) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]


def test_files_stay_inside_the_package(tmp_path):
    with PackageWriter(tmp_path / "pkg") as writer, pytest.raises(ValueError, match="'..' is not allowed"):
        writer.path("../escape.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_publish_without_a_manifest_writes_only_new_directories(tmp_path):
    """The bench's stateless baseline (one graph and its own JSON) is staged and swapped in the same way, but
    a directory without a manifest is never recognised as ours, so it never replaces anything."""
    out = tmp_path / "baseline"
    with PackageWriter(out) as writer:
        writer.path("baseline.json").write_text("{}")
        assert writer.publish() == out
    assert sorted(p.name for p in out.iterdir()) == ["baseline.json"]
    with pytest.raises(PackageWriteError, match="already exists"):
        PackageWriter(out)
    pkg = _write(tmp_path / "pkg", "old")
    before = _tree(pkg)
    with (
        pytest.raises(PackageWriteError, match="only a model package"),
        PackageWriter(pkg, overwrite=True) as w,
    ):
        w.path("baseline.json").write_text("{}")
        w.publish()
    assert _tree(pkg) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["baseline", "pkg"]
