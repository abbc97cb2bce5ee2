"""Loopback stand-ins for what a Hugging Face Space reaches over the network, for offline rehearsals.

- `loopback_hub`: the Hugging Face Hub, played by olah (a Hub mirror) serving local git repos, offline.
  olah needs pydantic>=2.13, above the app's pin, so it lives in its own virtual environment: `.ci/run`
  makes one and exports MLSR_OLAH; locally, the README's install makes `.venv-olah` in the checkout
  (`python3 -m venv .venv-olah && .venv-olah/bin/pip install olah==0.5.4`), which is found without it.
- `coco_proxy`: an HTTP proxy that plays images.cocodataset.org (the COCO photos' host), for HTTP_PROXY.
- `tls_front`: Debian's nginx as Spaces' HTTPS proxy in front of a local HTTP server (self-signed cert).

Everything listens on 127.0.0.1 only, and every wait is bounded.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COCO_HOST = "images.cocodataset.org"
CHROMIUM = "/usr/bin/chromium"
# Headless Chromium that can reach nothing but the loopback: every other host name fails to resolve.
OFFLINE_CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync", "--no-first-run",
                         "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1, EXCLUDE localhost"]
_GIT_DATE = "2024-01-01T00:00:00+00:00"  # fixed dates: the same files give the same commit hash


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    """Wait until `process` accepts connections on 127.0.0.1:`port`; raise with its log if it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode}:\n{_tail(log)}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{process.args[0]} did not listen on port {port} within {timeout} s:\n{_tail(log)}")


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"


@contextmanager
def _running(command: list[str], port: int, log: Path, timeout: float, **popen) -> Iterator[subprocess.Popen]:
    """Run `command` (output to `log`) until the block ends, once it listens on `port`; then stop it."""
    with open(log, "ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **popen)
    try:
        wait_for_port(port, process, log, timeout)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


# --- the Hub ---------------------------------------------------------------------------------------------


def olah_command() -> str | None:
    """The olah CLI: $MLSR_OLAH, else the checkout's `.venv-olah` (the README's install), else `olah-cli` on PATH."""
    own = Path(__file__).resolve().parents[2] / ".venv-olah" / "bin" / "olah-cli"
    command = os.environ.get("MLSR_OLAH") or (str(own) if own.is_file() else None) or shutil.which("olah-cli")
    return command if command and Path(command).is_file() else None


def git_commit(repo: Path, files: Path, message: str = "upload") -> str:
    """Make `repo` a git repo whose branch `main` holds a copy of the folder `files`; returns the commit hash."""
    # No global or system git config (a machine's LFS filters would turn big files into pointers).
    git_env = {**os.environ, "GIT_AUTHOR_DATE": _GIT_DATE, "GIT_COMMITTER_DATE": _GIT_DATE,
               "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), "-c", "user.name=mlsr tests", "-c", "user.email=tests@mlsr",
                               "-c", "init.defaultBranch=main", *args],
                              check=True, capture_output=True, text=True, env=git_env, timeout=120).stdout.strip()

    repo.mkdir(parents=True, exist_ok=True)
    git("init", "-q", "-b", "main")
    shutil.copytree(files, repo, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".git"))
    git("add", "-A")
    git("commit", "-q", "--allow-empty", "-m", message)
    return git("rev-parse", "HEAD")


def _seed_latest(cache: Path, kind: str, repo_id: str, commit: str) -> None:
    """Tell olah which commit is a repo's newest, so `GET /api/<kind>/<id>` (no revision) answers offline.

    olah 0.5.4 answers that route, offline, only from its own cache (`meta_head.json` files under
    repos-path), never from mirrors-path; `repo_info(id)` without a revision asks exactly that.
    """
    folder = cache / "api" / kind / repo_id / "revision" / commit
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "meta_head.json").write_text(json.dumps({"sha": commit, "lastModified": _GIT_DATE}))


# olah 0.5.4 reads every file of 121-149 bytes as UTF-8 text, to see whether it is a Git LFS pointer, and fails
# with a 500 on a binary one (an empty .npy array is 128 bytes, and an index has several): its tree listing, file
# heads and downloads of such a file break. The patch decodes that text with errors="replace", so a binary file
# is simply not a pointer; nothing else of olah changes (the three decodes are checked to be there).
_OLAH_PATCHED = """
import sys
import olah.mirror.repos as repos
source = open(repos.__file__, encoding="utf-8").read()
assert source.count('.decode("utf-8")') == 3, "olah changed: review the patch in tests/helpers/loopback.py"
exec(compile(source.replace('.decode("utf-8")', '.decode("utf-8", "replace")'), repos.__file__, "exec"),
     repos.__dict__)
from olah.server import cli
sys.argv[0] = "olah-cli"
sys.exit(cli())
"""


def olah_config(port: int, mirrors: Path, cache: Path) -> str:
    """olah's TOML config: loopback only, offline, serving the git repos under `mirrors`."""
    netloc = json.dumps(f"127.0.0.1:{port}")
    return (f'[basic]\nhost = "127.0.0.1"\nport = {port}\nrepos-path = {json.dumps(str(cache))}\n'
            f"mirrors-path = [{json.dumps(str(mirrors))}]\nmirror-netloc = {netloc}\nmirror-lfs-netloc = {netloc}\n"
            "\n[accessibility]\noffline = true\n")


@dataclass(frozen=True)
class LoopbackHub:
    """A running loopback Hub: its endpoint URL and the commit hash of each repo's `main`."""

    url: str
    commits: dict[tuple[str, str], str]

    def env(self, hf_home: Path) -> dict[str, str]:
        """Environment for a subprocess that uses this Hub (huggingface_hub reads HF_ENDPOINT at import)."""
        return {"HF_ENDPOINT": self.url, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "0",
                "HF_HUB_DISABLE_TELEMETRY": "1"}


@contextmanager
def loopback_hub(repos: dict[tuple[str, str], Path], workdir: Path, timeout: float = 60) -> Iterator[LoopbackHub]:
    """Serve `repos` ({("model" | "dataset", "org/name"): folder of its files}) with olah on a loopback port.

    Each folder is committed to branch `main` of a git repo under `workdir/mirrors`; olah (offline, log in
    `workdir/olah.log`) serves them until the block ends. Raises when olah is missing or does not start.
    huggingface_hub's downloads, repo info and file lists work, and so does mlsr's resolve-then-load. One
    gap: olah answers a tree listing of a missing folder with 401 (repo not found) where the Hub says 404,
    so transformers' `from_pretrained(<repo id>)`, which lists `additional_chat_templates/`, fails unless
    the repo has that folder (any file in it).
    """
    command = olah_command()
    if command is None:
        raise FileNotFoundError("olah is missing: install olah==0.5.4 into its own venv and set MLSR_OLAH to its"
                                " olah-cli (see tests/helpers/loopback.py)")
    mirrors, cache, port = workdir / "mirrors", workdir / "olah-cache", free_port()
    commits = {}
    for (repo_type, repo_id), files in repos.items():
        kind = {"model": "models", "dataset": "datasets"}[repo_type]
        commits[repo_type, repo_id] = git_commit(mirrors / kind / repo_id, files)
        _seed_latest(cache, kind, repo_id, commits[repo_type, repo_id])
    config = workdir / "olah.toml"
    config.write_text(olah_config(port, mirrors, cache))
    python = Path(command).with_name("python")  # olah-cli's own interpreter, with the patch below
    with _running([str(python), "-c", _OLAH_PATCHED, "-c", str(config), "--log-path", str(workdir / "olah-logs")], port,
                  workdir / "olah.log", timeout, cwd=workdir):
        yield LoopbackHub(f"http://127.0.0.1:{port}", commits)


# --- the COCO image host, through a proxy ---------------------------------------------------------------


@dataclass
class ProxyHandle:
    """A running COCO proxy: its URL (for HTTP_PROXY) and every URL it was asked for, in order."""

    url: str
    requests: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def requested(self) -> list[str]:
        """A copy of the URLs asked for so far (thread-safe)."""
        with self.lock:
            return list(self.requests)

    def env(self) -> dict[str, str]:
        """Environment that sends plain-HTTP requests through the proxy, but not those to the loopback itself."""
        no_proxy = "127.0.0.1,localhost"
        return {"HTTP_PROXY": self.url, "http_proxy": self.url, "NO_PROXY": no_proxy, "no_proxy": no_proxy}


class AnyCocoPhoto(Mapping):
    """Every `.jpg` path of the COCO host answered with one of a few real photos (chosen by the path's hash)."""

    def __init__(self, files: list[Path]) -> None:
        self.files = sorted(files)

    def __getitem__(self, path: str) -> Path:
        if not path.endswith(".jpg") or ".." in path:
            raise KeyError(path)
        return self.files[int(hashlib.sha256(path.encode()).hexdigest(), 16) % len(self.files)]

    def __iter__(self):
        return iter(())

    def __len__(self) -> int:
        return 0


def _proxy_handler(photos: Mapping[str, Path], handle: ProxyHandle, flaky: dict[str, int],
                   delay: float) -> type[BaseHTTPRequestHandler]:
    """The request handler of `coco_proxy`: COCO photos by path, 403 for other hosts, no CONNECT tunnels."""
    failures_left = dict(flaky)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet: the handle records the requests
            pass

        def answer(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for name, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_CONNECT(self) -> None:
            with handle.lock:
                handle.requests.append(f"CONNECT {self.path}")
            self.answer(405, b"no tunnels here", {"Allow": "GET, HEAD", "Connection": "close"})

        def do_GET(self) -> None:
            with handle.lock:
                handle.requests.append(self.path)
            time.sleep(delay)
            url = urllib.parse.urlsplit(self.path)
            if url.scheme != "http" or url.hostname != COCO_HOST or url.port not in (None, 80):
                return self.answer(403, b"only http://images.cocodataset.org/ is served")
            path = url.path.lstrip("/")
            with handle.lock:
                failing = failures_left.get(path, 0) > 0
                if failing:
                    failures_left[path] -= 1
            if failing:
                return self.answer(503, b"try again", {"Retry-After": "0"})
            photo = photos.get(path)
            if photo is None:
                return self.answer(404, b"no such photo")
            self.answer(200, photo.read_bytes(), {"Content-Type": "image/jpeg"})

        do_HEAD = do_GET

    return Handler


@contextmanager
def coco_proxy(photos: Mapping[str, Path], *, flaky: dict[str, int] | None = None,
               delay: float = 0.0) -> Iterator[ProxyHandle]:
    """An HTTP proxy on 127.0.0.1 that serves `photos` ({"val2017/x.jpg": file}) as http://images.cocodataset.org/.

    Other paths answer 404, other hosts 403, CONNECT 405. `flaky` ({path: n}) makes a path answer 503
    (Retry-After: 0) its first n times; `delay` seconds are slept before each answer.
    """
    with threaded_server() as server:
        handle = ProxyHandle(f"http://127.0.0.1:{server.server_address[1]}")
        server.RequestHandlerClass = _proxy_handler(photos, handle, flaky or {}, delay)
        yield handle


@contextmanager
def threaded_server() -> Iterator[ThreadingHTTPServer]:
    """A threading HTTP server on a free loopback port, serving until the block ends. Its address is known only
    now, so the caller sets its RequestHandlerClass (which may need the address) before anyone can ask it."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# --- Spaces' HTTPS proxy ----------------------------------------------------------------------------------


def nginx_command() -> str | None:
    """Debian's nginx (in /usr/sbin, which a non-root PATH may lack); None when it is not installed."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def self_signed_cert(workdir: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 and localhost (openssl CLI); returns (cert, key)."""
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert),
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def nginx_config(port: int, upstream_port: int, workdir: Path, cert: Path, key: Path) -> str:
    """nginx's config: TLS on 127.0.0.1:`port`, streaming to http://127.0.0.1:`upstream_port` as Spaces does."""
    temp = "\n".join(f"    {kind}_temp_path {workdir / 'temp' / kind};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers as nobody could not write temp files in workdir
    return f"""{user}worker_processes 1;
pid {workdir / 'nginx.pid'};
error_log {workdir / 'nginx-error.log'} info;
events {{ worker_connections 256; }}
http {{
    access_log {workdir / 'nginx-access.log'};
{temp}
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        client_max_body_size 1g;
        location / {{
            proxy_pass http://127.0.0.1:{upstream_port};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host:$server_port;
            proxy_set_header X-Forwarded-Host $host:$server_port;
            proxy_set_header X-Forwarded-Proto https;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
        }}
    }}
}}
"""


@contextmanager
def tls_front(upstream_port: int, workdir: Path, timeout: float = 30) -> Iterator[str]:
    """HTTPS on a loopback port in front of http://127.0.0.1:`upstream_port` (nginx); yields its https URL.

    nginx runs in the foreground with its config, pid, logs and temp files in `workdir`, and a
    self-signed certificate: clients must not verify it (Playwright: ignore_https_errors=True).
    """
    command = nginx_command()
    if command is None:
        raise FileNotFoundError("nginx is missing: install Debian's nginx (`apt-get install -y nginx`)")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "temp").mkdir(exist_ok=True)
    cert, key = self_signed_cert(workdir)
    port = free_port()
    config = workdir / "nginx.conf"
    config.write_text(nginx_config(port, upstream_port, workdir, cert, key))
    with _running([command, "-p", str(workdir), "-e", str(workdir / "nginx-error.log"), "-c", str(config),
                   "-g", "daemon off;"], port, workdir / "nginx.log", timeout):
        yield f"https://127.0.0.1:{port}/"
