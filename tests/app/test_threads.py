"""The thread policy (mlsr.threads): the app gives each of its concurrent requests cores // concurrency threads
(MLSR_THREADS overrides), read with torch.get_num_threads() inside the app's own worker; the command line uses
every core; a bad MLSR_THREADS is one clear line."""

import threading

import pytest

from mlsr import threads
from mlsr.errors import InputError
from tests.helpers.data import ROOT
from tests.helpers.loopback import free_port

pytestmark = pytest.mark.filterwarnings("ignore:::gradio.queueing")


@pytest.fixture
def restored(monkeypatch):
    """torch's threads and the policy as they were before the test (both are process-wide)."""
    import torch

    before = torch.get_num_threads()
    monkeypatch.delenv(threads.ENV, raising=False)
    monkeypatch.delenv("MLSR_SEARCH_THREADS", raising=False)
    yield
    torch.set_num_threads(before)
    threads._APPLIED.clear()


def test_policy_shares_the_cores_between_concurrent_requests(restored, monkeypatch):
    monkeypatch.setattr(threads, "available_cores", lambda: 8)
    assert [threads.policy_threads(c) for c in (1, 2, 3, 8, 16)] == [8, 4, 2, 1, 1]
    monkeypatch.setenv(threads.ENV, "3")
    assert threads.policy_threads(2) == 3


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_a_bad_mlsr_threads_is_refused(restored, monkeypatch, value):
    monkeypatch.setenv(threads.ENV, value)
    with pytest.raises(InputError, match="MLSR_THREADS must be a whole number"):
        threads.policy_threads(1)


def test_the_command_line_says_a_bad_mlsr_threads_in_one_line(restored, monkeypatch, capsys):
    from mlsr.cli import main

    monkeypatch.setenv(threads.ENV, "many")
    assert main(["search", "--index", "nowhere", "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: MLSR_THREADS must be a whole number") and len(err.strip().splitlines()) == 1


def test_a_cgroup_quota_caps_the_cores(restored, monkeypatch, tmp_path):
    quota = tmp_path / "cpu.max"
    quota.write_text("150000 100000\n")  # 1.5 cores: 2 threads may run
    monkeypatch.setattr(threads, "_CGROUP_CPU_MAX", quota)
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(16)))
    assert threads.available_cores() == 2
    quota.write_text("max 100000\n")
    assert threads.available_cores() == 16


@pytest.mark.parametrize("threads_env", [None, "3"])
def test_the_apps_worker_runs_with_the_policys_threads(restored, monkeypatch, app_args, threads_env):
    """The app started with --concurrency 2: a request's handler, on Gradio's worker thread, sees torch's threads
    and the sparse search's split set by the policy (cores // 2, or MLSR_THREADS)."""
    import torch
    from gradio_client import Client

    import app
    from mlsr.serving.service import Service
    from mlsr.index.kernel_search import search_threads

    if threads_env is not None:
        monkeypatch.setenv(threads.ENV, threads_env)
    expected = int(threads_env) if threads_env else max(1, threads.available_cores() // 2)
    torch.set_num_threads(expected + 1)  # not what the policy sets: the test can fail
    seen = []
    original = Service.suggest

    def recording(self, *args, **kwargs):
        seen.append((threading.current_thread() is threading.main_thread(), torch.get_num_threads(),
                     search_threads()))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Service, "suggest", recording)
    args = app.parse_args([*app_args, "--concurrency", "2", "--device", "cpu"])
    demo = app.create_app(args)
    demo.queue(default_concurrency_limit=args.concurrency)
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(),
                            allowed_paths=[str(ROOT / "assets")], quiet=True)
    try:
        found = Client(url, verbose=False).predict("a bus in the city", 3, "expand", api_name="/suggest")
    finally:
        demo.close()
    assert found["results"] and seen == [(False, expected, expected)]  # on a worker thread, not the main one
