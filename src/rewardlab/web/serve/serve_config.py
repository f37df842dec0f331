"""`ServeConfig`: how `rewardlab serve` listens, batches and limits (the CLI flags mirror it).

Kept free of torch and FastAPI so the CLI validates every option before a model loads. `/info`
reports it, so a client can read the limits it must stay under. The token is not a field: it is a
secret, and the config is printed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rewardlab.errors import WebError
from rewardlab.models.query_formats import QUERY_FORMATS
from rewardlab.training.train_config import PRECISIONS  # resolved by training's resolve_precision
from rewardlab.web.security import check_address, host_name

__all__ = ["PRECISIONS", "QUERY_FORMAT_CHOICES", "ServeConfig"]

QUERY_FORMAT_CHOICES = ("auto", *QUERY_FORMATS)


def _opt(default: Any, help_text: str, **extra: Any) -> Any:
    return field(default=default, metadata={"help": help_text, **extra})


@dataclass(frozen=True)
class ServeConfig:
    """Options of one `rewardlab serve` process."""

    host: str = _opt("127.0.0.1", "address to bind; anything but loopback needs a token")
    port: int = _opt(8000, "TCP port")
    allow_hosts: tuple[str, ...] = _opt((), "host names the server answers to besides localhost, "
                                        "127.0.0.1, [::1] and --host (the Host header of every "
                                        "request must be one of them: a web page whose DNS name "
                                        "is re-pointed at this machine is refused); e.g. a "
                                        "reverse proxy's name")
    max_batch: int = _opt(32, "most sequences scored together: requests arriving together are merged "
                          "into one batch of up to this many")
    forward_batch: int = _opt(8, "sequences per forward within a batch, sorted by length so they "
                              "hardly pad")
    workers: int = _opt(1, "batches scored at once, each on its own thread; on a CPU the threads "
                        "are split between them: 2 pays when other work shares the cores, 1 is "
                        "faster on a quiet machine (docs/benchmarks.md)")
    max_wait_ms: float = _opt(5.0, "how long the first request of a batch waits for company "
                              "(milliseconds; 0 = score whatever has arrived)")
    max_body_bytes: int = _opt(8 * 1024 * 1024, "largest request body; larger → 413")
    max_queries: int = _opt(1024, "most queries (pairs, rows) in one request; more → 413")
    max_chars: int = _opt(100_000, "most characters in one query, prompt or response; more → 413")
    precision: str = _opt("auto", "autocast dtype of the forward: auto = bf16 where the hardware "
                          "runs it natively (CUDA with bf16, CPUs with avx512_bf16/AMX), else fp32; "
                          "fp32 reproduces `rewardlab score` to float rounding", choices=PRECISIONS)
    query_format: str = _opt("auto", "how /get_reward queries are rendered: the policy's chat "
                             "family (chatml, llama3, gemma, mistral, phi3, hh = plain "
                             "'Human: …\\n\\nAssistant: …'); auto = detected per query, falling "
                             "back to the checkpoint's own template", choices=QUERY_FORMAT_CHOICES)
    policy_tokenizer: str | None = _opt(None, "the policy's local tokenizer (or checkpoint) "
                                        "directory: its chat template's family and its EOS/pad/BOS "
                                        "tokens are used to read /get_reward queries")

    def __post_init__(self) -> None:
        check_address(self.host, self.port)
        # the CLI hands over a list; a frozen config keeps a tuple
        object.__setattr__(self, "allow_hosts", tuple(_host(h) for h in self.allow_hosts))
        for name in ("workers", "max_batch", "forward_batch", "max_body_bytes", "max_queries", "max_chars"):
            if getattr(self, name) < 1:
                flag = "--" + name.replace("_", "-")
                raise WebError(f"{flag} must be at least 1 (got {getattr(self, name)})")
        # NaN would pass `< 0` and make every batch wait forever; 10 s is already no longer "short"
        if not 0.0 <= self.max_wait_ms <= 10_000.0:
            raise WebError(f"--max-wait-ms must be in [0, 10000] (got {self.max_wait_ms})")
        if self.query_format not in QUERY_FORMAT_CHOICES:
            raise WebError(f"--query-format must be one of {', '.join(QUERY_FORMAT_CHOICES)} "
                           f"(got {self.query_format!r})")
        if self.policy_tokenizer is not None and not (
                Path(self.policy_tokenizer) / "tokenizer_config.json").is_file():
            raise WebError(f"--policy-tokenizer {self.policy_tokenizer}: no tokenizer_config.json "
                           f"there (give the policy's local checkpoint or tokenizer directory)")
        if self.precision not in PRECISIONS:
            raise WebError(f"--precision must be one of {', '.join(PRECISIONS)} "
                           f"(got {self.precision!r})")


def _host(value: str) -> str:
    """One --allow-host value as a bare lower-case name ('RM.internal:8000' → 'rm.internal')."""
    name = host_name(value) if value.strip() and "/" not in value else ""
    if not name or any(c.isspace() for c in value.strip()):
        raise WebError(f"--allow-host {value!r}: give a host name or address, e.g. rm.internal")
    return name
