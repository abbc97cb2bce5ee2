"""Nothing a user can supply is unpickled or executed: malicious files are refused, and the code holds no
pickle, eval, shell or remote-code calls."""

from __future__ import annotations

import io
import json
import pickle
import re
import tokenize
import zipfile

import numpy as np
import pytest
import scipy.sparse as sp

from tests.helpers.data import ROOT, write_manifest
from mlsr.errors import IndexFormatError, ModelLoadError
from mlsr.models.head import SparseHead
from tests.helpers.data import write_format1_index
from mlsr.index.manifest import MANIFEST_FILE, POSTING_FILES
from mlsr.index.sparse import SparseIndex
from mlsr._files import sha256_file

FORBIDDEN = {
    r"\bpickle\.loads?\(": "unpickling",
    r"(?<![.\w])eval\(": "eval",  # the builtin, not torch's module.eval()
    r"(?<![.\w])exec\(": "exec",
    r"shell\s*=\s*True": "a shell",
    r"os\.system\(": "a shell",
    r"trust_remote_code\s*=\s*True": "remote code",
    r"allow_pickle\s*=\s*True": "unpickling",
    r"torch\.load\((?![^)]*weights_only=True)": "torch.load without weights_only=True",
}


def code_only(text: str) -> str:
    """`text` with its strings and comments blanked (same lines): a message telling users how to load an exported
    model with `trust_remote_code=True` is not a call; code is."""
    lines = text.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    kept = list(text)
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type in (tokenize.STRING, tokenize.COMMENT) or token.type == getattr(tokenize, "FSTRING_MIDDLE", -1):
            (row, col), (end_row, end_col) = token.start, token.end
            for at in range(starts[row - 1] + col, starts[end_row - 1] + end_col):
                if kept[at] != "\n":
                    kept[at] = " "
    return "".join(kept)


def test_the_code_holds_no_unsafe_calls():
    sources = [ROOT / "app.py", *sorted((ROOT / "mlsr").rglob("*.py"))]
    found = []
    for path in sources:
        text = code_only(path.read_text())
        for pattern, what in FORBIDDEN.items():
            for match in re.finditer(pattern, text):
                found.append(f"{path.relative_to(ROOT)}:{text[:match.start()].count(chr(10)) + 1}: {what}")
    assert found == []


def test_the_unsafe_call_scan_sees_code_not_words():
    code = 'model = load(name, trust_remote_code=True)  # trust_remote_code=True\nprint("trust_remote_code=True")\n'
    assert [re.findall(pattern, code_only(code)) for pattern in [r"trust_remote_code\s*=\s*True"]] == [
        ["trust_remote_code=True"]]
    assert code_only("x = 'eval('\n") == "x =        \n"


class Exploit:
    """Unpickling this runs code: it would create the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_bomb_in_a_v4_checkpoint_is_not_executed(tmp_path):
    folder = tmp_path / "evil-head"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "d2s", "dense_size": 256}))
    marker = tmp_path / "pwned"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"proj.weight": Exploit(marker)}))
    with pytest.raises(ModelLoadError, match="cannot read its weights"):
        SparseHead.from_pretrained(folder)
    assert not marker.exists()


@pytest.mark.parametrize("version", [1, 2])
def test_an_object_array_in_an_index_is_not_unpickled(tmp_path, version):
    path = tmp_path / "index"
    vectors = sp.csr_matrix(np.eye(2, 300, dtype=np.float32))
    if version == 1:
        write_format1_index(path, vectors, [{"id": "0"}, {"id": "1"}])
    else:
        SparseIndex.build(vectors).save(path)
    marker = tmp_path / "pwned"
    buffer = io.BytesIO()
    if version == 1:
        name = "sparse.npz"
        with zipfile.ZipFile(buffer, "w") as archive:  # an .npz whose "data" array holds a pickled object
            with archive.open("data.npy", "w") as member:
                np.lib.format.write_array(member, np.array([Exploit(marker)], dtype=object), allow_pickle=True)
    else:
        name = POSTING_FILES["weights"]  # a .npy holding a pickled object
        np.lib.format.write_array(buffer, np.array([Exploit(marker)], dtype=object), allow_pickle=True)
    (path / name).write_bytes(buffer.getvalue())
    manifest = json.loads((path / MANIFEST_FILE).read_text())  # the attacker controls the manifest too
    manifest["files"][name] = {"bytes": (path / name).stat().st_size, "sha256": sha256_file(path / name)}
    write_manifest(path, manifest)
    with pytest.raises(IndexFormatError, match="cannot be read"):
        SparseIndex.load(path)
    assert not marker.exists()


def test_item_urls_are_never_handed_to_the_browser_and_only_dataset_hosts_are_fetched(tmp_path, monkeypatch):
    """An index may point at image URLs: the gallery shows only files the app serves itself, and the server
    fetches a picture only from a dataset's own image host (here none: no connection is opened at all)."""
    import http.server
    import threading

    import numpy as np
    import scipy.sparse as sp

    from mlsr.serving.pictures import Pictures
    from mlsr.serving.results import Hit
    from mlsr.app.handlers import _gallery_items
    from mlsr.index.sparse import SparseIndex

    requests: list[str] = []

    class Recorder(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the http.server API)
            requests.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("HTTP_PROXY", base)  # even through a proxy that would answer, nothing is asked
    monkeypatch.setenv("http_proxy", base)
    placeholder = tmp_path / "missing.png"
    urls = [f"{base}/photo.jpg", f"{base}/drawing.svg?x=1", "file:///etc/passwd", "ftp://images.cocodataset.org/a.jpg"]
    index = SparseIndex.build(sp.csr_matrix(np.eye(4, 8, dtype=np.float32)),
                              [{"id": str(i), "image": url} for i, url in enumerate(urls)])
    try:
        pictures = Pictures(index)
        hits = [Hit(i + 1, i, str(i), 1.0, None, "") for i in range(len(urls))]
        shown = _gallery_items(hits, placeholder, pictures.picture)
        assert [image for image, _ in shown] == [str(placeholder)] * len(urls)
    finally:
        server.shutdown()
    assert requests == [], f"the server fetched {requests}"
