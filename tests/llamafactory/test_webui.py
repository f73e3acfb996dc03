"""LoSiA in LLaMA Board: the patched Train tab and runner (in process) and a real headless-browser session."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from losia_factory.core import LosiaConfig
from losia_factory.llamafactory.methods import LOSIA, PILORA
from losia_factory.llamafactory.webui import LANGS, alerts, input_names, method_locales

INPUT_NAMES, LOCALES = input_names(LOSIA), method_locales(LOSIA)
PILORA_INPUT_NAMES, PILORA_LOCALES = input_names(PILORA), method_locales(PILORA)
ALERTS = {key: text for key, text in alerts().items() if key in LOSIA.ui.alerts}
PILORA_ALERTS = {key: text for key, text in alerts().items() if key in PILORA.ui.alerts}

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


@pytest.fixture()
def engine(tmp_path, monkeypatch):
    """LLaMA Board's engine with the top bar and the (patched) Train tab, built in a temporary working dir."""
    import gradio as gr
    from llamafactory.webui.components import create_top, create_train_tab
    from llamafactory.webui.engine import Engine

    monkeypatch.chdir(tmp_path)
    engine = Engine()
    with gr.Blocks():
        engine.manager.add_elems("top", create_top())
        with gr.Tab("Train"):
            engine.manager.add_elems("train", create_train_tab(engine))
    return engine


def values(engine, **overrides):
    data = {elem: getattr(elem, "value", None) for elem in engine.manager.get_elem_list()}
    for elem_id, value in overrides.items():
        data[engine.manager.get_elem_by_id(elem_id.replace("__", "."))] = value
    return data


def test_losia_and_pilora_are_method_choices():
    from llamafactory.extras.constants import METHODS

    assert "losia" in METHODS and "pilora" in METHODS


def test_train_tab_holds_every_losia_field_with_labels(engine):
    for name in (*INPUT_NAMES, "losia_tab", "losia_note"):
        engine.manager.get_elem_by_id(f"train.{name}")
        assert set(LOCALES[name]) == set(LANGS), name
    assert {
        f"losia_{n}"
        for n in (
            "rank_factor",
            "time_slot",
            "output_rank_factor",
            "importance",
            "ema_beta1",
            "ema_beta2",
            "mode",
            "pro",
            "target",
            "extra_modules",
            "selection",
            "importance_dtype",
            "layers_path",
            "seed",
            "rewarm",
            "adam_reset",
            "output_order",
        )
    } <= set(INPUT_NAMES)
    # ... and every other LosiaConfig field, with no list to keep up to date here.
    assert set(INPUT_NAMES) == {LOSIA.argument_name(f.name) for f in dataclasses.fields(LosiaConfig)}
    for lang in LANGS:  # LLaMA Board relabels every element it has a locale for; a missing language would raise
        updates = engine.change_lang(lang)
        label = updates[engine.manager.get_elem_by_id("train.losia_time_slot")].label
        assert label == LOCALES["losia_time_slot"][lang]["label"]
    for alert in ALERTS.values():
        assert set(alert) == set(LANGS)


def method_values(engine, method="losia", **settings):
    """Train-tab values of a ``method`` run on a custom model, with ``settings`` on top."""
    return values(
        engine,
        top__model_name="Custom",
        top__model_path="/models/tiny",
        top__finetuning_type=method,
        train__dataset=["demo"],
        train__output_dir="run",
        **settings,
    )


def test_runner_builds_losia_arguments_the_parser_accepts(engine, tmp_path):
    from llamafactory.hparams import get_train_args

    data = method_values(
        engine,
        train__compute_type="fp32",
        train__losia_time_slot=37,
        train__losia_rank_factor=0.25,
        train__losia_extra_modules="norm",
        train__losia_pro=False,
    )
    assert engine.runner._initialize(data, do_train=True, from_preview=True) == ""
    args = engine.runner._parse_train_args(data)
    assert args["finetuning_type"] == "losia"
    assert (args["losia_time_slot"], args["losia_rank_factor"], args["losia_pro"]) == (37, 0.25, False)
    assert args["losia_extra_modules"] == "norm" and args["losia_layers_path"] is None
    args.update(output_dir=str(tmp_path / "out"), report_to="none")
    *_, finetuning_args, _ = get_train_args(args)
    assert finetuning_args.losia_config.time_slot == 37
    # Other methods get no losia_* argument.
    lora = engine.runner._parse_train_args(
        values(
            engine,
            top__model_name="Custom",
            top__finetuning_type="lora",
            train__dataset=["demo"],
            train__output_dir="run",
        )
    )
    assert not any(k.startswith("losia_") for k in lora)


@pytest.mark.parametrize(
    "settings,alert",
    [
        ({"train__compute_type": "fp16"}, "err_losia_fp16"),
        ({"top__booster": "unsloth"}, "err_losia_unsloth"),
    ],
)
def test_runner_explains_unsupported_settings(engine, settings, alert):
    """The alert replaces the run; stages 2 and 3 are not among them (see the ZeRO test below)."""
    data = method_values(engine, **settings)
    assert engine.runner._initialize(data, do_train=True, from_preview=True) == ALERTS[alert]["en"]


# --------------------------------------------------------------------------------------------------------------
# A real browser: headless Chromium driven by Playwright against `llamafactory-cli webui`.

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]


def _chromium() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if os.path.exists(path):
        return path
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("Debian chromium is not installed and cannot be installed here (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        result = subprocess.run(install, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"apt-get could not install chromium: {result.stderr[-500:]}")
    return "/usr/bin/chromium"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def webui(assets, tmp_path):
    """``llamafactory-cli webui`` on 127.0.0.1 and a free port, in a working dir holding the demo data."""
    shutil.copytree(assets["data"], tmp_path / "data")
    port = _free_port()
    env = {
        **os.environ,
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.pop("LOSIA_FACTORY_DISABLE", None)
    log = open(tmp_path / "webui.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [str(VENV_BIN / "llamafactory-cli"), "webui"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if process.poll() is not None or time.time() > deadline:
                    raise AssertionError((tmp_path / "webui.log").read_text()[-3000:]) from None
                time.sleep(1)
        yield {"url": url, "workdir": tmp_path}
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


def _set_up_run(page, webui, assets, method: str):
    """Open LLaMA Board on the tiny model and the demo dataset, fp32, with ``method`` (its accordion visible)."""
    page.goto(webui["url"], timeout=60_000)
    model_name = page.get_by_label("Model name", exact=True)
    model_name.click()
    model_name.fill("Custom")
    page.get_by_role("option", name="Custom", exact=True).click()
    page.get_by_label("Model path").first.fill(str(assets["model"]))
    assert not page.locator(f"#{method}_tab").is_visible()
    _pick(page, "Finetuning method", method)
    page.locator(f"#{method}_tab").wait_for(state="visible")
    _pick(page, "Chat template", "chatml")
    page.get_by_label("Dataset", exact=True).first.click()
    page.get_by_role("option", name="demo_arithmetic", exact=True).click()
    page.keyboard.press("Escape")
    _pick(page, "Compute type", "fp32")
    return page


def _preview(page, playwright, needle: str) -> str:
    """Click Preview until the command shows ``needle``; returns the previewed command."""
    for attempt in range(3):  # a click that lands while Gradio is still busy with the previous event is dropped
        page.get_by_role("button", name="Preview command", exact=True).click()
        try:
            page.wait_for_function(f"() => document.body.innerText.includes('{needle}')", timeout=15_000)
            break
        except playwright.TimeoutError:
            if attempt == 2:
                raise AssertionError(page.inner_text("body")[-3000:]) from None
    return page.locator("code").all_inner_texts()[-1]


def _pick(page, label: str, option: str) -> None:
    page.get_by_label(label, exact=True).first.click()
    page.get_by_role("option", name=option, exact=True).click()


def _wait_textarea(page, text: str, timeout: float = 60_000) -> None:
    page.wait_for_function(
        "t => [...document.querySelectorAll('textarea')].some(e => e.value.includes(t))", arg=text, timeout=timeout
    )


@pytest.mark.slow
def test_browser_train_preview_start_chat_export(webui, assets, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    chromium = _chromium()
    work = webui["workdir"]
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1400})
        page.set_default_timeout(30_000)
        assert not _set_up_run(page, webui, assets, "losia").locator("#pilora_tab").is_visible()
        slot = page.locator("#losia_time_slot input[type=number]")
        slot.fill("37")
        slot.press("Enter")
        page.add_style_tag(content="[class*='toast'] { display: none !important; }")  # keep alerts off the image
        page.locator("#losia_tab").screenshot(path=str(tmp_path / "webui_losia.png"))
        if os.environ.get("LOSIA_UPDATE_DOCS") == "1":
            shutil.copyfile(tmp_path / "webui_losia.png", ROOT / "docs" / "images" / "webui_losia.png")

        # DeepSpeed and its offload stay available (LoSiA writes configs that keep its optimizer).
        assert not page.get_by_label("DeepSpeed stage", exact=True).first.is_disabled()
        assert not page.get_by_label("Enable offload", exact=True).first.is_disabled()

        preview = _preview(page, playwright, "--losia_time_slot")
        assert "--finetuning_type losia" in preview and "--losia_time_slot 37" in preview, preview

        page.get_by_text("Extra configurations", exact=True).click()
        page.get_by_label("Extra arguments").first.fill(
            json.dumps(
                {"optim": "adamw_torch", "max_steps": 4, "preprocessing_num_workers": 1, "dataloader_num_workers": 0}
            )
        )
        page.get_by_role("button", name="Start", exact=True).click()
        deadline = time.time() + 240
        while not list(work.glob("saves/Custom/losia/*/losia_config.json")):
            assert time.time() < deadline, (work / "webui.log").read_text()[-3000:]
            time.sleep(2)
        (saved,) = work.glob("saves/Custom/losia/*/losia_config.json")
        assert json.loads(saved.read_text())["config"]["time_slot"] == 37
        run_dir = saved.parent
        page.wait_for_function("() => document.body.innerText.includes('Finished')", timeout=60_000)

        # Chat with the trained (full) model, then export it.
        page.get_by_label("Checkpoint path", exact=True).click()
        page.get_by_role("option", name=run_dir.name, exact=True).click()
        page.keyboard.press("Escape")
        page.get_by_role("tab", name="Chat").click()
        page.get_by_role("button", name="Load model", exact=True).click()
        _wait_textarea(page, "Model loaded")
        page.get_by_placeholder("Input...").fill("What is 2 plus 3?")
        page.get_by_role("button", name="Submit", exact=True).click()
        page.wait_for_function("() => document.querySelectorAll('.message').length >= 2", timeout=60_000)
        page.get_by_role("button", name="Unload model", exact=True).click()
        page.get_by_role("tab", name="Export").click()
        page.get_by_label("Export dir").first.fill(str(work / "exported"))
        page.get_by_role("button", name="Export", exact=True).click()
        deadline = time.time() + 120
        while not (work / "exported" / "model.safetensors").exists():
            assert time.time() < deadline, (work / "webui.log").read_text()[-3000:]
            time.sleep(1)
        browser.close()
    from safetensors.torch import load_file

    trained, exported = (
        load_file(str(run_dir / "model.safetensors")),
        load_file(str(work / "exported" / "model.safetensors")),
    )
    assert sorted(trained) == sorted(exported) and all((trained[k] == exported[k]).all() for k in trained)


@pytest.mark.parametrize("offload", [False, True])
@pytest.mark.parametrize("stage", ["2", "3"])
def test_deepspeed_stages_get_a_losia_safe_config(engine, tmp_path, monkeypatch, stage, offload):
    import json

    from losia_factory.llamafactory.deepspeed_config import zero_config

    monkeypatch.chdir(tmp_path)  # the runner writes into LLaMA-Factory's cache folder, relative to the cwd
    data = method_values(
        engine,
        train__ds_stage=stage,
        train__ds_offload=offload,
    )
    assert engine.runner._initialize(data, do_train=True, from_preview=True) == ""
    args = engine.runner._parse_train_args(data)
    assert args["deepspeed"].endswith(f"ds_z{stage}_{'offload_' if offload else ''}losia_config.json")
    written = json.loads((tmp_path / args["deepspeed"]).read_text())
    assert written == zero_config(int(stage), offload)
    assert ("offload_optimizer" in written["zero_optimization"]) == offload
    assert written.get("zero_force_ds_cpu_optimizer", True) is not offload  # DeepSpeed keeps LoSiA's optimizer


# -- PiLoRA ---------------------------------------------------------------------------------------------------------


def test_train_tab_holds_every_pilora_field_with_labels(engine):
    for name in (*PILORA_INPUT_NAMES, "pilora_tab", "pilora_note"):
        engine.manager.get_elem_by_id(f"train.{name}")
        assert set(PILORA_LOCALES[name]) == set(LANGS), name
    assert set(PILORA_LOCALES) == {*PILORA_INPUT_NAMES, "pilora_tab", "pilora_note"}
    for lang in LANGS:
        updates = engine.change_lang(lang)
        assert (
            updates[engine.manager.get_elem_by_id("train.pilora_rank")].label
            == PILORA_LOCALES["pilora_rank"][lang]["label"]
        )
    for alert in PILORA_ALERTS.values():
        assert set(alert) == set(LANGS)


def test_runner_builds_pilora_arguments_the_parser_accepts(engine, tmp_path):
    from llamafactory.hparams import get_train_args

    data = method_values(
        engine,
        "pilora",
        train__compute_type="fp32",
        train__pilora_rank=16,
        train__pilora_supplementary_rank=1,
        train__pilora_partition="top_half",
        train__pilora_probe_steps=20,
    )
    assert engine.runner._initialize(data, do_train=True, from_preview=True) == ""
    args = engine.runner._parse_train_args(data)
    assert (args["pilora_rank"], args["pilora_supplementary_rank"], args["pilora_probe_steps"]) == (16, 1, 20)
    assert not any(k.startswith("losia_") for k in args)
    args.update(output_dir=str(tmp_path / "out"), report_to="none")
    *_, finetuning_args, _ = get_train_args(args)
    config = finetuning_args.pilora_config
    assert (config.rank, config.supplementary_rank, config.partition, config.probe_steps) == (16, 1, "top_half", 20)


@pytest.mark.parametrize(
    "setting,value,alert",
    [
        ("train__ds_stage", "2", "err_pilora_deepspeed"),
        ("top__quantization_bit", "4", "err_pilora_quantization"),
        ("top__booster", "unsloth", "err_pilora_unsloth"),
        ("train__training_stage", "DPO", "err_pilora_stage"),
    ],
)
def test_runner_explains_what_pilora_cannot_run(engine, setting, value, alert):
    data = method_values(
        engine,
        "pilora",
        **{setting: value},
    )
    assert engine.runner._initialize(data, do_train=True, from_preview=True) == PILORA_ALERTS[alert]["en"]


def test_several_devices_run_pilora_as_ddp(engine, monkeypatch):
    import llamafactory.extras.misc

    monkeypatch.setattr(llamafactory.extras.misc, "get_device_count", lambda: 2)
    data = method_values(
        engine,
        "pilora",
    )
    assert engine.runner._initialize(data, do_train=True, from_preview=True) == ""
    assert "err_pilora_devices" not in PILORA_ALERTS


@pytest.mark.slow
def test_browser_pilora_accordion_and_preview(webui, assets, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1400})
        page.set_default_timeout(30_000)
        assert not _set_up_run(page, webui, assets, "pilora").locator("#losia_tab").is_visible()
        rank = page.locator("#pilora_rank input[type=number]")
        rank.fill("16")
        rank.press("Enter")
        page.add_style_tag(content="[class*='toast'] { display: none !important; }")
        page.locator("#pilora_tab").screenshot(path=str(tmp_path / "webui_pilora.png"))
        if os.environ.get("LOSIA_UPDATE_DOCS") == "1":
            shutil.copyfile(tmp_path / "webui_pilora.png", ROOT / "docs" / "images" / "webui_pilora.png")
        assert page.get_by_label("Enable offload", exact=True).first.is_disabled()
        preview = _preview(page, playwright, "--pilora_rank")
        assert "--finetuning_type pilora" in preview and "--pilora_rank 16" in preview, preview
        assert "--losia_" not in preview
        browser.close()
