"""A service whose handler and job fail while holding secrets in locals and arguments (the log-safety tests)."""

from __future__ import annotations

from pydantic import BaseModel

from shipkit import Service
from shipkit.jobs import JobContext

PASSWORD = "hunter2-pw-9f3a"
TOKEN = "tok-1c0ffee-5e4c"
NKEY_SEED = "SUAIBDPBAUTWCWBKIO6XHQNINK5FWJW4OHLXC3HQ2KFE4PEJUA44CNHTC4"
LOCAL_VALUE = "local-value-7b2d"
SECRETS = (PASSWORD, TOKEN, NKEY_SEED, LOCAL_VALUE)

service = Service("leaky", description="log safety tests")


class Login(BaseModel):
    """Credentials a request carries."""

    user: str
    password: str


@service.handler("login")
async def login(creds: Login) -> dict[str, str]:
    """Fail with secrets in the frame: the argument, a token and a seed."""
    api_key = TOKEN
    seed = NKEY_SEED
    note = LOCAL_VALUE
    raise RuntimeError(f"login failed for {creds.user} ({len(api_key) + len(seed) + len(note)})")


@service.job_worker("leak", max_attempts=1)
async def leak(payload: dict[str, str], job: JobContext) -> None:
    """Fail a job with the same secrets in its frame."""
    password = PASSWORD
    api_key = TOKEN
    seed = NKEY_SEED
    note = LOCAL_VALUE
    raise ValueError(f"job failed ({len(password) + len(api_key) + len(seed) + len(note)})")
