"""Tokenizers shared by the app's worker threads: the race that padded one batch with another's settings."""

from __future__ import annotations

import threading
import time

from transformers import AutoTokenizer

from mlsr.models.tokenizer import LockedTokenizer, locked

TEXTS = [["a short one", "a somewhat longer caption of a boy with buffalo"], ["word " * 60, "and three words"]]


class SlowBackend:
    """The Rust tokenizer with a pause inside `encode_batch`, as under load: the other thread gets to run."""

    def __init__(self, backend) -> None:
        self.__dict__["_backend"] = backend

    def encode_batch(self, *args, **kwargs):
        time.sleep(0.001)
        return self._backend.encode_batch(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def __setattr__(self, name, value):
        setattr(self._backend, name, value)


def slow_tokenizer(tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    tokenizer._tokenizer = SlowBackend(tokenizer._tokenizer)
    return tokenizer


def hammer(tokenizer, rounds: int = 100) -> list[str]:
    """Two threads tokenising batches with different padding and truncation at once; returns the errors."""
    errors: list[str] = []

    def work(which: int) -> None:
        for _ in range(rounds):
            try:
                if which:
                    tokenizer(TEXTS[1], padding=True, truncation=True, max_length=35, return_tensors="pt")
                else:
                    tokenizer(TEXTS[0], add_special_tokens=False)  # no padding: it switches padding off
            except Exception as error:  # the race shows up as ValueError or RuntimeError ("Already borrowed")
                errors.append(f"{type(error).__name__}: {error}")

    threads = [threading.Thread(target=work, args=(which,)) for which in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_a_locked_tokenizer_survives_concurrent_calls(tokenizer_dir):
    # The control: without the lock, the same calls break (else this test would prove nothing).
    assert hammer(slow_tokenizer(tokenizer_dir)), "the race did not show without the lock"
    assert hammer(locked(slow_tokenizer(tokenizer_dir))) == []


def test_the_wrapper_behaves_like_the_tokenizer(tokenizer_dir):
    plain = AutoTokenizer.from_pretrained(tokenizer_dir)
    wrapped = locked(plain)
    assert locked(wrapped) is wrapped and isinstance(wrapped, LockedTokenizer) and wrapped.wrapped is plain
    assert len(wrapped) == len(plain) and wrapped.unk_token_id == plain.unk_token_id
    assert wrapped("a buffalo")["input_ids"] == plain("a buffalo")["input_ids"]
    assert wrapped.convert_ids_to_tokens([2000]) == plain.convert_ids_to_tokens([2000])
