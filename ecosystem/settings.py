"""Runtime settings: the only place that reads environment variables (prefix ``M2N2_``, groups split by ``__``)."""

import re
from pathlib import Path
from typing import Annotated, Self

import platformdirs
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

DEVICE = re.compile(r"cpu|cuda(:\d+)?")
RAY_ADDRESS = re.compile(r"(ray://)?[\w.\-\[\]:]+:\d+")


def _check_device(device: str) -> str:
    """A torch device name this project places models on."""
    if not DEVICE.fullmatch(device):
        raise ValueError(f"device must be cpu, cuda or cuda:N, got {device!r}")
    return device


Device = Annotated[str, AfterValidator(_check_device)]


class StoreSettings(BaseModel):
    """Where the store lives: ``url`` names a database, else SQLite in the data directory."""

    model_config = ConfigDict(frozen=True)

    url: str | None = None

    @field_validator("url")
    @classmethod
    def _parseable(cls, url: str | None) -> str | None:
        if url is None or not url.strip():
            return None
        try:
            make_url(url)
        except ArgumentError:
            # The URL may hold a password: name the expected form, not the value.
            raise ValueError("store url is not a database URL, e.g. postgresql+psycopg://user:pw@host/db") from None
        return url


class EvolutionSettings(BaseModel):
    """The evolver's schedule and the M2N2 run it drives."""

    model_config = ConfigDict(frozen=True)

    interval_seconds: float = Field(10, gt=0)  # pause between ticks; a slow tick delays the next (coalesced)
    steps_per_tick: int | None = Field(200, ge=1)  # M2N2 generations per tick; None: bounded by seconds only
    seconds_per_tick: float | None = Field(None, gt=0)  # wall-clock budget per tick; None: bounded by steps only
    torch_threads: int = Field(1, ge=1)  # 1 leaves the other cores to the serving workers
    archive_size: int = Field(20, ge=1)  # the paper's archive for digits; it uses 15 for LLMs
    alpha: float = Field(1.0, ge=0)  # resource-competition exponent; 0 is the plain GA
    seed: int = 0
    device: Device = "cpu"  # where children are built and scored: cpu, cuda or cuda:N
    # Weights kept besides archive members, registered models and pinned ones: the newest champions
    # (rollback targets). Other children's files are deleted; `m2n2 rebuild` replays their recipe.
    keep_champions: int = Field(5, ge=1)
    # Children proposed per step from the same archive and scored together; the run is reproducible for a
    # seed and this k, whatever the evaluators. 1 is the paper's serial loop.
    batch: int = Field(1, ge=1)
    # Score children on a Ray cluster: "auto" (the cluster this node belongs to), "ray://host:10001" (Ray
    # Client) or "host:6379"; None scores them in this process. The cluster's nodes must mount the data
    # directory at the same path (children travel as file paths, not tensors).
    ray_address: str | None = None
    ray_actors: int = Field(2, ge=1)  # evaluator actors, each with torch_threads CPUs
    ray_actor_gpus: float = Field(0, ge=0)  # GPUs per actor (it then scores on cuda); 1 for a model per GPU

    @field_validator("ray_address")
    @classmethod
    def _ray_address(cls, address: str | None) -> str | None:
        if address is None or not address.strip():
            return None
        if address != "auto" and not RAY_ADDRESS.fullmatch(address):
            raise ValueError(f"ray_address must be auto, ray://host:port or host:port, got {address!r}")
        return address

    @model_validator(mode="after")
    def _bounded(self) -> Self:
        if self.steps_per_tick is None and self.seconds_per_tick is None:
            raise ValueError("set steps_per_tick or seconds_per_tick (or both): a tick needs a budget")
        return self


class PromotionSettings(BaseModel):
    """When a challenger replaces the champion."""

    model_config = ConfigDict(frozen=True)

    margin: float = Field(0.0, ge=0, le=1)  # required lead in mean gate score (scores lie in [0, 1])
    significance: float = Field(0.05, gt=0, lt=1)  # the paired test's p-value must be below this
    min_gate_points: int = Field(30, ge=1)  # fewer gate points than this: no promotion (the test has no power)


class RegistrationSettings(BaseModel):
    """Limits on models registered by users."""

    model_config = ConfigDict(frozen=True)

    max_bytes: int = Field(2 * 1024**3, ge=1)  # 2 GiB: a 1B-parameter model in 16-bit floats
    # Directories whose files the service may register by path (besides <data_dir>/incoming), for
    # checkpoints too large to upload; anything outside them is refused.
    import_dirs: tuple[Path, ...] = ()


class ServiceSettings(BaseModel):
    """The HTTP service: workers, hot swap, request limits and who may call what."""

    model_config = ConfigDict(frozen=True)

    workers: int = Field(2, ge=1)  # entry-service worker processes, each serving the champion
    torch_threads: int = Field(1, ge=1)  # per worker: the digits model needs no more, and the evolver keeps a core
    poll_seconds: float = Field(0.5, gt=0)  # how often each worker checks the champion pointer
    max_batch_size: int = Field(256, ge=2)  # adaptive batching: most inputs per batch (and per request)
    max_request_bytes: int = Field(512 * 1024**2, ge=1)  # larger bodies get 413; register big files by path
    protect_reads: bool = False  # True: predict, status, lineage and export need the token too
    init_demo: bool = True  # an empty store gets the digits demo ecosystem on the evolver's first start
    evolver_url: str | None = None  # the evolver service's URL when it runs elsewhere (a cluster); None: started here
    device: Device = "cpu"  # where workers serve the champion: cpu, cuda or cuda:N
    # OpenAI-compatible routes (families that generate text): the most tokens one completion may ask for
    # (a larger max_tokens is refused with 422), and the most sequences (prompts times n) decoded in one batch.
    max_tokens_cap: int = Field(512, ge=1)
    max_generation_rows: int = Field(32, ge=1)


class Settings(BaseSettings):
    """Every setting of one ecosystem, read from ``M2N2_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="M2N2_", env_nested_delimiter="__", frozen=True, extra="ignore")

    data_dir: Path = Field(default_factory=lambda: Path(platformdirs.user_data_dir("m2n2")))
    admin_token: SecretStr | None = None  # bearer token for mutating HTTP calls (register, promote, ...)
    store: StoreSettings = StoreSettings()
    evolution: EvolutionSettings = EvolutionSettings()
    promotion: PromotionSettings = PromotionSettings()
    registration: RegistrationSettings = RegistrationSettings()
    service: ServiceSettings = ServiceSettings()

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, path: Path) -> Path:
        # Absolute, so the server and the evolver agree on one directory whatever their working directory.
        return path.expanduser().absolute()

    @field_validator("admin_token")
    @classmethod
    def _nonempty(cls, token: SecretStr | None) -> SecretStr | None:
        if token is not None and not token.get_secret_value().strip():
            raise ValueError("admin_token is empty; unset M2N2_ADMIN_TOKEN or give it a value")
        return token

    @property
    def sqlite_file(self) -> Path | None:
        """The SQLite database file in the data directory, or None when ``store.url`` names a database."""
        return None if self.store.url else self.data_dir / "ecosystem.db"

    @property
    def database_url(self) -> str:
        """The store URL in effect: ``store.url``, else ``sqlite:///<data_dir>/ecosystem.db``."""
        return self.store.url or f"sqlite:///{self.sqlite_file}"
