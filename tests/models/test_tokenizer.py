"""Tokenizers shared by the app's worker threads: the race that padded one batch with another's settings."""

from __future__ import annotations

import threading

from transformers import AutoTokenizer

from mlsr.models.tokenizer import LockedTokenizer, locked

TEXTS = [["a short one", "a somewhat longer caption of a boy with buffalo"], ["word " * 60, "and three words"]]


class PausingBackend:
    """The Rust tokenizer, paused inside the first thread's `encode_batch` (its padding settings already applied)
    until the second thread has either finished its own call or started waiting for the lock: the interleaving
    that broke under load, made to happen every time instead of hoped for after a sleep."""

    def __init__(self, backend, first: threading.Thread, inside: threading.Event, second_went: threading.Event):
        self.__dict__.update(_backend=backend, _first=first, _inside=inside, _second_went=second_went)

    def encode_batch(self, *args, **kwargs):
        if threading.current_thread() is self._first:
            self._inside.set()
            assert self._second_went.wait(timeout=60), "the second call neither ran nor waited"
        return self._backend.encode_batch(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def __setattr__(self, name, value):
        setattr(self._backend, name, value)


class WatchedLock:
    """A LockedTokenizer's lock that says when the second thread starts waiting for it."""

    def __init__(self, lock, second_went: threading.Event) -> None:
        self.lock, self.second_went = lock, second_went

    def __enter__(self):
        if threading.current_thread().name == "second":
            self.second_went.set()
        return self.lock.__enter__()

    def __exit__(self, *exc):
        return self.lock.__exit__(*exc)


def interleave(tokenizer_dir, with_lock: bool) -> list[str]:
    """A padded, truncated batch paused mid-call while an unpadded call runs; returns the errors."""
    inside, second_went = threading.Event(), threading.Event()
    errors: list[str] = []
    plain = AutoTokenizer.from_pretrained(tokenizer_dir)
    tokenizer = locked(plain) if with_lock else plain
    if with_lock:
        tokenizer._lock = WatchedLock(tokenizer._lock, second_went)

    def padded() -> None:
        try:
            tokenizer(TEXTS[1], padding=True, truncation=True, max_length=35, return_tensors="pt")
        except Exception as error:  # the race shows up as ValueError or RuntimeError ("Already borrowed")
            errors.append(f"{type(error).__name__}: {error}")

    def unpadded() -> None:
        try:
            tokenizer(TEXTS[0], add_special_tokens=False)  # no padding: it switches padding off
        finally:
            second_went.set()

    first = threading.Thread(target=padded, name="first")
    plain._tokenizer = PausingBackend(plain._tokenizer, first, inside, second_went)
    first.start()
    assert inside.wait(timeout=60)
    second = threading.Thread(target=unpadded, name="second")
    second.start()
    first.join(timeout=60)
    second.join(timeout=60)
    assert not first.is_alive() and not second.is_alive()
    return errors


def test_a_locked_tokenizer_survives_concurrent_calls(tokenizer_dir):
    # The control: without the lock, the same interleaving breaks the padded batch (else this test would prove nothing).
    assert interleave(tokenizer_dir, with_lock=False), "the race did not show without the lock"
    assert interleave(tokenizer_dir, with_lock=True) == []


def test_the_wrapper_behaves_like_the_tokenizer(tokenizer_dir):
    plain = AutoTokenizer.from_pretrained(tokenizer_dir)
    wrapped = locked(plain)
    assert locked(wrapped) is wrapped and isinstance(wrapped, LockedTokenizer) and wrapped.wrapped is plain
    assert len(wrapped) == len(plain) and wrapped.unk_token_id == plain.unk_token_id
    assert wrapped("a buffalo")["input_ids"] == plain("a buffalo")["input_ids"]
    assert wrapped.convert_ids_to_tokens([2000]) == plain.convert_ids_to_tokens([2000])
