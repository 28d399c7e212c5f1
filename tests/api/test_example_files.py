"""What CI can check of each example without a container engine or a cluster.

Every example folder has its script, a Dockerfile that builds (FROM first, every COPY
source present in the repository root, which is the build context, and CMD running
the copied script), a pipeline.yaml that is a well-formed Numaflow Pipeline using the
image the Dockerfile names, a sample input and the output expected from it.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import ROOT

EXAMPLES = sorted(p.parent for p in (ROOT / "examples").glob("*/*/Dockerfile"))
IDS = [str(p.relative_to(ROOT / "examples")) for p in EXAMPLES]
# What serves each example: decides which vertex field must carry its image.
SINKS = ("sink/", "modern/sink_")
TRANSFORMERS = (
    "function/mapt_event_time",
    "function/event_time_filter",
    "modern/transformer_event_time",
)
SOURCES = ("source/",)
RETRIEVERS = ("sideinput/threshold_retriever",)  # no vertex: the side-input manager runs it


def test_every_example_folder_is_covered() -> None:
    """Every folder holding an example.py has a Dockerfile, so none escapes these checks."""
    scripts = sorted(p.parent for p in (ROOT / "examples").glob("*/*/example.py"))
    assert scripts == EXAMPLES
    assert len(EXAMPLES) >= 10


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and continuations joined."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text(encoding="utf-8"))
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


def image_tag(dockerfile: Path) -> str:
    """The tag the Dockerfile's build comment gives the image."""
    match = re.search(r"docker build -f (\S+) -t (\S+) \.", dockerfile.read_text("utf-8"))
    assert match, f"{dockerfile}: no `docker build -f ... -t ... .` comment"
    assert match.group(1) == str(dockerfile.relative_to(ROOT))
    return match.group(2)


@pytest.mark.parametrize("folder", EXAMPLES, ids=IDS)
def test_dockerfile_builds_from_the_repository_root(folder: Path) -> None:
    """FROM comes first, each COPY source exists in the context, CMD runs the script."""
    steps = instructions(folder / "Dockerfile")
    assert steps[0][0] == "FROM", "the first instruction must be FROM"
    known = {"FROM", "WORKDIR", "COPY", "RUN", "CMD", "ENV", "ARG", "USER", "EXPOSE"}
    assert {word for word, _ in steps} <= known
    copied = set()
    for word, rest in steps:
        if word == "COPY":
            *sources, _target = shlex.split(rest)
            for source in sources:
                assert not source.startswith("--"), "no COPY flags expected"
                assert (ROOT / source).exists(), f"COPY source {source} is missing"
                copied.add(source)
    assert str((folder / "example.py").relative_to(ROOT)) in copied
    (cmd,) = [rest for word, rest in steps if word == "CMD"]
    assert yaml.safe_load(cmd) == ["python", "-u", "example.py"]


def vertex_images(vertex: dict[str, Any]) -> dict[str, str]:
    """The images a vertex runs, by role: udf, sink or transformer."""
    images = {}
    if "udf" in vertex:
        images["udf"] = vertex["udf"]["container"]["image"]
    if "udsink" in vertex.get("sink", {}):
        images["sink"] = vertex["sink"]["udsink"]["container"]["image"]
    if "transformer" in vertex.get("source", {}):
        images["transformer"] = vertex["source"]["transformer"]["container"]["image"]
    if "udsource" in vertex.get("source", {}):
        images["udsource"] = vertex["source"]["udsource"]["container"]["image"]
    return images


@pytest.mark.parametrize("folder", EXAMPLES, ids=IDS)
def test_pipeline_is_a_numaflow_pipeline_using_the_image(folder: Path) -> None:
    """Valid YAML; a Pipeline whose edges join its vertices; the example's image in its role."""
    pipeline = yaml.safe_load((folder / "pipeline.yaml").read_text(encoding="utf-8"))
    assert pipeline["apiVersion"] == "numaflow.numaproj.io/v1alpha1"
    assert pipeline["kind"] == "Pipeline"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", pipeline["metadata"]["name"])
    vertices = pipeline["spec"]["vertices"]
    names = [v["name"] for v in vertices]
    assert len(set(names)) == len(names)
    for vertex in vertices:
        assert sum(role in vertex for role in ("source", "udf", "sink")) == 1, vertex["name"]
    edges = pipeline["spec"]["edges"]
    assert {e["from"] for e in edges} | {e["to"] for e in edges} == set(names)
    sources = {v["name"] for v in vertices if "source" in v}
    sinks = {v["name"] for v in vertices if "sink" in v}
    assert sources
    assert sinks
    assert not {e["to"] for e in edges} & sources
    assert not {e["from"] for e in edges} & sinks

    name = str(folder.relative_to(ROOT / "examples"))
    tag = image_tag(folder / "Dockerfile")
    if name in RETRIEVERS:
        retrievers = [s["container"]["image"] for s in pipeline["spec"]["sideInputs"]]
        assert retrievers == [tag]
        listed = {n for v in vertices for n in v.get("sideInputs", [])}
        assert listed == {s["name"] for s in pipeline["spec"]["sideInputs"]}
        return
    role = (
        "sink"
        if name.startswith(SINKS)
        else "udsource"
        if name.startswith(SOURCES)
        else "transformer"
        if name in TRANSFORMERS
        else "udf"
    )
    users = [v["name"] for v in vertices if vertex_images(v).get(role) == tag]
    assert len(users) == 1, f"expected one {role} vertex with image {tag}"
    if name.startswith(("function/reduce", "modern/reduce")):
        (reducer,) = [v for v in vertices if v["name"] == users[0]]
        assert "fixed" in reducer["udf"]["groupBy"]["window"]


@pytest.mark.parametrize("folder", EXAMPLES, ids=IDS)
def test_sample_input_and_expected_output_are_there(folder: Path) -> None:
    """One sample input (input.txt or input.jsonl; none for a retriever) and expected.jsonl."""
    inputs = sorted(p.name for p in folder.glob("input.*"))
    name = str(folder.relative_to(ROOT / "examples"))
    assert inputs in ([[]] if name in RETRIEVERS else (["input.txt"], ["input.jsonl"]))
    assert (folder / "expected.jsonl").read_text(encoding="utf-8").strip()


def _containers(node: Any) -> list[dict[str, Any]]:
    """Every ``container`` mapping anywhere in a parsed pipeline."""
    if isinstance(node, list):
        return [c for item in node for c in _containers(item)]
    if not isinstance(node, dict):
        return []
    found = [node["container"]] if isinstance(node.get("container"), dict) else []
    return found + [c for value in node.values() for c in _containers(value)]


@pytest.mark.parametrize("folder", EXAMPLES, ids=IDS)
def test_pipeline_runs_a_locally_loaded_image(folder: Path) -> None:
    """Each example image is used as loaded into kind or k3d: imagePullPolicy IfNotPresent.

    Without it, a `:latest` image is always pulled, and one that is only loaded into a
    local cluster fails with ErrImagePull.
    """
    pipeline = yaml.safe_load((folder / "pipeline.yaml").read_text(encoding="utf-8"))
    containers = _containers(pipeline)
    assert containers
    assert image_tag(folder / "Dockerfile") in {c["image"] for c in containers}
    for container in containers:
        assert container["image"].startswith("pynumaflow-example/")
        assert container["imagePullPolicy"] == "IfNotPresent"


def test_fallback_example_runs_its_image_twice() -> None:
    """The fallback example: one sink vertex, the same image as primary and fallback sink."""
    folder = ROOT / "examples" / "sink" / "fallback"
    pipeline = yaml.safe_load((folder / "pipeline.yaml").read_text(encoding="utf-8"))
    (vertex,) = [v for v in pipeline["spec"]["vertices"] if "sink" in v]
    tag = image_tag(folder / "Dockerfile")
    assert vertex["sink"]["udsink"]["container"]["image"] == tag
    assert vertex["sink"]["fallback"]["udsink"]["container"]["image"] == tag
