"""Where weights come from: folders, the hub cache (offline), pickle refusal, listings."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdkit import Generator, ModelLoadError, ModelNotFoundError, UnsafeCheckpointError
from sdkit.local_models import list_local_models
from sdkit.models import (
    ModelDefaults,
    ModelSource,
    model_defaults,
    resolve_source,
    weights_sha256,
)


def _fake_hub_cache(root: Path, repo_id: str, model: Path) -> Path:
    """Lay out ``model`` as huggingface_hub caches a download of ``repo_id``."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(model, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    return root


def test_hub_id_loads_from_cache_offline(
    tiny_sd_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = _fake_hub_cache(tmp_path / "hub", "acme/tiny-sd", tiny_sd_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    gen = Generator.from_pretrained("acme/tiny-sd", cache_dir=cache, device="cpu", progress=False)
    ref = Generator.from_pretrained(tiny_sd_path, device="cpu", progress=False)
    assert gen.source.kind == "hub"
    assert gen.model_sha256 == ref.model_sha256
    a = gen("x", steps=2, seed=1).image
    b = ref("x", steps=2, seed=1).image
    assert a.recipe.model == "acme/tiny-sd"
    np.testing.assert_array_equal(np.asarray(a.image), np.asarray(b.image))


@pytest.mark.parametrize("how", ["env", "flag"])
def test_missing_hub_id_offline_names_id_and_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    kwargs: dict[str, object] = {"cache_dir": tmp_path}
    if how == "env":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        kwargs["local_files_only"] = True
    with pytest.raises(ModelNotFoundError) as info:
        Generator.from_pretrained("acme/not-here", **kwargs)  # type: ignore[arg-type]
    assert "acme/not-here" in str(info.value) and str(tmp_path) in str(info.value)
    assert info.value.hint and "hf download" in info.value.hint


def test_paths_that_do_not_exist_are_not_taken_for_hub_ids(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError):
        resolve_source(str(tmp_path / "nope"))
    with pytest.raises(ModelNotFoundError):
        resolve_source("./model.safetensors")
    assert resolve_source("stabilityai/stable-diffusion-xl-base-1.0").kind == "hub"


def test_a_missing_folder_with_a_hub_shaped_name_says_no_such_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 25: ``models/my-folder`` that does not exist is not a raw hub error."""
    monkeypatch.chdir(tmp_path)
    # beside a models/ folder the name can only mean a folder: refused before any loading
    (tmp_path / "models").mkdir()
    with pytest.raises(ModelNotFoundError) as info:
        Generator.from_pretrained("models/my-folder")
    assert "no such folder" in info.value.message and "models/my-folder" in info.value.message
    assert str(tmp_path / "models" / "my-folder") in info.value.message
    assert info.value.hint and "sdkit models models" in info.value.hint
    # names that can only be paths never reach the hub, wherever they are
    for name in ("./models/x", "../x", "~/no-such-model", "a/b/c", "my-model.safetensors"):
        with pytest.raises(ModelNotFoundError) as info:
            resolve_source(name)
        assert "no model file or folder" in info.value.message and name in info.value.message
    # real hub ids (and 'owner/name' with no such local folder) are still hub ids
    for hub_id in ("stabilityai/sdxl-turbo", "runwayml/stable-diffusion-v1-5", "gpt2", "x/m.v2"):
        assert resolve_source(hub_id) == ModelSource("hub", hub_id, hub_id)
    # offline and not cached: the offline error, whose hint also says no folder was found
    with pytest.raises(ModelNotFoundError) as info:
        Generator.from_pretrained(
            "acme/my-folder", cache_dir=tmp_path / "hub", local_files_only=True
        )
    assert "not in the local Hugging Face cache" in info.value.message
    assert info.value.hint and "hf download acme/my-folder" in info.value.hint
    assert f"no 'acme/my-folder' in {tmp_path}" in info.value.hint


def _hub_answers(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    """Make diffusers' metadata request to the hub fail with ``error`` (no network is used)."""
    import diffusers.pipelines.pipeline_utils as pipeline_utils

    def model_info(*args: object, **kwargs: object) -> object:
        raise error

    monkeypatch.setattr(pipeline_utils, "model_info", model_info)


def test_online_a_name_the_hub_does_not_know_is_no_such_folder_or_hub_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub.errors import RepositoryNotFoundError
    from huggingface_hub.utils import httpx  # the HTTP client huggingface_hub uses

    monkeypatch.chdir(tmp_path)
    request = httpx.Request("GET", "https://huggingface.co/api/models/acme/my-folder")
    _hub_answers(
        monkeypatch,
        RepositoryNotFoundError(
            "404 Repository Not Found", response=httpx.Response(404, request=request)
        ),
    )
    with pytest.raises(ModelNotFoundError) as info:
        Generator.from_pretrained(
            "acme/my-folder", cache_dir=tmp_path / "hub", local_files_only=False
        )
    assert info.value.message == "no such folder or hub model: 'acme/my-folder'"
    assert info.value.hint and f"no 'acme/my-folder' in {tmp_path}" in info.value.hint
    # no network is another failure: a load error, still hinting at the folder
    _hub_answers(monkeypatch, httpx.ConnectError("no route to host"))
    with pytest.raises(ModelLoadError) as load:
        Generator.from_pretrained(
            "acme/my-folder", cache_dir=tmp_path / "hub", local_files_only=False
        )
    assert type(load.value) is ModelLoadError and "acme/my-folder" in load.value.message
    assert load.value.hint and f"no 'acme/my-folder' in {tmp_path}" in load.value.hint


def test_folder_without_model_index(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError) as info:
        Generator.from_pretrained(tmp_path)
    assert "model_index.json" in str(info.value)


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".bin", ".pth", ".pkl", ".pickle"])
def test_pickle_checkpoints_refused_by_default(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(UnsafeCheckpointError) as info:
        Generator.from_single_file(path)
    assert "allow_pickle" in str(info.value.hint)


def test_folder_with_only_pickle_weights_refused(tiny_sd_path: Path, tmp_path: Path) -> None:
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_sd_path, folder)
    for weights in folder.rglob("*.safetensors"):
        weights.rename(weights.with_suffix(".bin"))
    with pytest.raises(UnsafeCheckpointError):
        Generator.from_pretrained(folder)


def test_weights_sha256_is_stable_and_content_bound(tmp_path: Path) -> None:
    a = tmp_path / "a.safetensors"
    a.write_bytes(b"abc")
    import hashlib

    assert weights_sha256([a]) == hashlib.sha256(b"abc").hexdigest()
    b = tmp_path / "b.safetensors"
    b.write_bytes(b"def")
    both = weights_sha256([a, b])
    assert both == weights_sha256([b, a])
    b.write_bytes(b"deg")  # same size: the hash cache is keyed on mtime too
    stat = b.stat()
    os.utime(b, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert weights_sha256([a, b]) != both


def test_list_local_models(tiny_sd_path: Path, tmp_path: Path) -> None:
    cache = _fake_hub_cache(tmp_path / "hub", "acme/tiny-sd", tiny_sd_path)
    found = list_local_models([tiny_sd_path.parent], cache_dir=cache)
    by_name = {m.name: m for m in found}
    assert by_name["acme/tiny-sd"].kind == "hub-cache"
    assert by_name["acme/tiny-sd"].family == "sd"
    assert by_name[str(tiny_sd_path)].kind == "folder"
    assert by_name["sdkit-default"].kind == "default"


def test_hub_model_with_only_pickle_weights_refused(
    tiny_sd_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_sd_path, pickled)
    for weights in pickled.rglob("*.safetensors"):
        weights.rename(weights.with_name(weights.name.replace(".safetensors", ".bin")))
    cache = _fake_hub_cache(tmp_path / "hub", "acme/pickled", pickled)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UnsafeCheckpointError) as info:
        Generator.from_pretrained("acme/pickled", cache_dir=cache)
    assert "allow_pickle" in str(info.value.hint)


# -- a model's own defaults (sdkit.json) -----------------------------------------------------


def _with_defaults(model: Path, folder: Path, text: str) -> Path:
    shutil.copytree(model, folder)
    (folder / "sdkit.json").write_text(text)
    return folder


def test_a_folder_sets_the_steps_and_guidance_a_call_leaves_out(
    tiny_sd_path: Path, tmp_path: Path
) -> None:
    folder = _with_defaults(
        tiny_sd_path, tmp_path / "m", '{"defaults": {"steps": 3, "guidance_scale": 1.5}}'
    )
    gen = Generator(folder, device="cpu", progress=False)
    assert gen.defaults == ModelDefaults(3, 1.5, str(folder / "sdkit.json"))
    made = gen("x", seed=1).image
    assert (made.recipe.steps, made.recipe.guidance_scale) == (3, 1.5)
    # the same pixels as those options given to the model without the file
    plain = Generator(tiny_sd_path, device="cpu", progress=False)
    assert plain.defaults == ModelDefaults(25, 7.0, "sdkit")
    same = plain("x", seed=1, steps=3, guidance_scale=1.5).image
    np.testing.assert_array_equal(np.asarray(made.image), np.asarray(same.image))
    assert not np.array_equal(np.asarray(made.image), np.asarray(plain("x", seed=1).image.image))
    # what the call says wins
    ours = gen("x", seed=1, steps=2, guidance_scale=7.0).image
    theirs = plain("x", seed=1, steps=2).image
    assert (ours.recipe.steps, ours.recipe.guidance_scale) == (2, 7.0)
    np.testing.assert_array_equal(np.asarray(ours.image), np.asarray(theirs.image))
    # generate_many takes them too
    [path] = gen.generate_many("x", tmp_path / "out", seed=4)
    with Image.open(path) as written:
        assert "Steps: 3, " in written.info["parameters"]
        assert "CFG scale: 1.5, " in written.info["parameters"]


def test_only_what_the_file_gives_changes(tiny_sd_path: Path, tmp_path: Path) -> None:
    folder = _with_defaults(tiny_sd_path, tmp_path / "m", '{"defaults": {"guidance_scale": 0}}')
    found = model_defaults(resolve_source(folder))
    assert (found.steps, found.guidance_scale) == (25, 0.0)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("{not json", "Expecting property name"),
        ('{"steps": 3}', 'no "defaults" object'),
        ('{"defaults": {"steps": 0}}', "steps=0"),
        ('{"defaults": {"steps": 2.5}}', "steps=2.5"),
        ('{"defaults": {"steps": true}}', "steps=True"),
        ('{"defaults": {"guidance_scale": "7"}}', "guidance_scale='7'"),
        ('{"defaults": {"guidance_scale": 101}}', "guidance_scale=101"),
        ('{"defaults": {"cfg": 4}}', "unknown key 'cfg'"),
        # a misspelt top-level key is refused, not ignored (docs/guide.md, Model defaults)
        ('{"defaults": {"steps": 4}, "stpes": 8}', "unknown top-level key 'stpes'"),
        ('{"defaults": {}, "version": 2}', "unknown top-level key 'version'"),
    ],
)
def test_a_bad_defaults_file_is_a_load_error(
    tiny_sd_path: Path, tmp_path: Path, text: str, words: str
) -> None:
    folder = _with_defaults(tiny_sd_path, tmp_path / "m", text)
    with pytest.raises(ModelLoadError) as info:
        Generator(folder, device="cpu", progress=False)
    assert str(folder / "sdkit.json") in str(info.value) and words in str(info.value)
    assert info.value.hint and '"defaults"' in info.value.hint


def test_turbo_models_default_to_few_steps_without_guidance(
    tiny_sd_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "my-sd-turbo"
    shutil.copytree(tiny_sd_path, folder)
    gen = Generator(folder, device="cpu", progress=False)
    assert gen.defaults == ModelDefaults(4, 0.0, "turbo")
    assert gen("x", seed=1).image.recipe.steps == 4
    # by hub id too, and a hub snapshot's own sdkit.json comes first
    assert model_defaults(resolve_source("stabilityai/sdxl-turbo")).origin == "turbo"
    cache = _fake_hub_cache(tmp_path / "hub", "acme/tiny-turbo", folder)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert model_defaults(resolve_source("acme/tiny-turbo"), cache_dir=cache).origin == "turbo"
    snapshot = next((cache / "models--acme--tiny-turbo" / "snapshots").iterdir())
    (snapshot / "sdkit.json").write_text('{"defaults": {"steps": 2, "guidance_scale": 1}}')
    hub = Generator.from_pretrained("acme/tiny-turbo", cache_dir=cache, progress=False)
    assert hub.defaults == ModelDefaults(2, 1.0, str(snapshot / "sdkit.json"))
