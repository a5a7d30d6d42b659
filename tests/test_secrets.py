"""Secrets: the real Secret Service, no keychain, a hung keychain, redaction, bad names."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keyring
import keyring.core
import pytest
from keyring.backend import KeyringBackend
from keyring.backends import fail
from keyring.compat import properties
from pydantic import SecretStr

from desktop.core.errors import SecretStoreError
from desktop.core.redaction import install_redaction, redact, register_secret, uninstall_redaction
from desktop.core.secret_names import TRAINER_SECRETS
from desktop.core.secrets import InvalidSecretError, SecretName, SecretStore

pytest_plugins = ["keychain"]

if TYPE_CHECKING:
    from keychain import RealKeychain

SERVICE = "finetune-desk"


class _TestOnlyBackend(KeyringBackend):
    """Base for the fakes below: never viable, so keyring's own detection never picks one."""

    @properties.classproperty
    def priority(cls) -> float:
        raise RuntimeError("test-only backend")


class MemoryKeyring(_TestOnlyBackend):
    """A keychain at the edge of the system, in memory."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.items: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.items.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.items[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        del self.items[(service, username)]


class HangingKeyring(_TestOnlyBackend):
    """A keychain whose every call blocks until `release` is set (a hung D-Bus service)."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.release = threading.Event()
        self.value = "hung-keychain-finally-answered"

    def get_password(self, service: str, username: str) -> str | None:
        self.release.wait()
        return self.value

    def set_password(self, service: str, username: str, password: str) -> None:
        self.release.wait()

    def delete_password(self, service: str, username: str) -> None:
        self.release.wait()


@pytest.fixture(autouse=True)
def _isolated_keyring(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Restore keyring's process-wide backend and drop FTDESK_* overrides around every test."""
    for name in SecretName:
        monkeypatch.delenv(name.override_env_var, raising=False)
    saved = keyring.core._keyring_backend
    yield
    keyring.core._keyring_backend = saved


@pytest.fixture
def redaction() -> Iterator[None]:
    """The app's log redaction, removed again afterwards."""
    install_redaction()
    yield
    uninstall_redaction()


# -- the real keychain -------------------------------------------------------------------------


@pytest.mark.keychain
def test_real_keychain_set_read_delete(real_keychain: RealKeychain) -> None:
    store = SecretStore()
    value = "hf_realKeychainSentinel0123456789abcdef"

    before = store.status("hf_token")
    assert before.in_keychain is False and before.problem is None
    assert before.source == "missing"
    assert store.get("hf_token") is None

    store.set("hf_token", value + "\n")  # a pasted key's newline is not part of it

    got = store.get(SecretName.HF_TOKEN)
    assert isinstance(got, SecretStr)
    assert got.get_secret_value() == value
    assert value not in repr(got)
    # An independent Secret Service client (libsecret's secret-tool) sees the same item.
    assert real_keychain.lookup(SERVICE, "hf_token") == value

    status = store.status("hf_token")
    assert status.in_keychain is True and status.source == "keychain"
    assert status.backend == "Secret Service (gnome-keyring)"
    assert "Secret Service (gnome-keyring)" in status.describe()
    assert value not in status.describe()
    assert store.backend_description() == "Secret Service (gnome-keyring)"

    assert store.delete("hf_token") is True
    assert store.get("hf_token") is None
    assert real_keychain.lookup(SERVICE, "hf_token") is None
    assert store.delete("hf_token") is False


@pytest.mark.keychain
def test_real_keychain_async_and_trainer_env(real_keychain: RealKeychain) -> None:
    store = SecretStore()
    runpod = "rpa_asyncSentinelValue0123456789"
    hf = "hf_asyncSentinelValue0123456789"

    async def scenario() -> dict[str, str]:
        await store.aset("runpod_api_key", SecretStr(runpod))
        await store.aset("hf_token", hf)
        got = await store.aget("runpod_api_key")
        assert got is not None and got.get_secret_value() == runpod
        assert (await store.astatus("runpod_api_key")).in_keychain is True
        env = await store.atrainer_env()
        assert await store.adelete("runpod_api_key") is True
        return env

    env = asyncio.run(scenario())
    assert env == {"RUNPOD_API_KEY": runpod, "HF_TOKEN": hf}  # wandb_api_key is not set
    assert store.trainer_env(["hf_token"]) == {"HF_TOKEN": hf}
    assert store.get("runpod_api_key") is None
    assert real_keychain.lookup(SERVICE, "runpod_api_key") is None
    with pytest.raises(SecretStoreError, match="wandb_api_key"):
        store.trainer_env(["wandb_api_key"], strict=True)


@pytest.mark.keychain
def test_environment_override_wins_over_real_keychain(
    real_keychain: RealKeychain, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SecretStore()
    store.set("wandb_api_key", "stored-wandb-key-0123456789")
    monkeypatch.setenv("FTDESK_WANDB_API_KEY", "session-wandb-key-0123456789")

    got = store.get("wandb_api_key")
    assert got is not None and got.get_secret_value() == "session-wandb-key-0123456789"
    status = store.status("wandb_api_key")
    assert status.source == "environment" and status.in_keychain is True
    assert store.trainer_env(["wandb_api_key"]) == {"WANDB_API_KEY": "session-wandb-key-0123456789"}
    # The override is never written into the keychain.
    assert real_keychain.lookup(SERVICE, "wandb_api_key") == "stored-wandb-key-0123456789"


@pytest.mark.keychain
def test_locked_real_keychain_says_unlock(real_keychain: RealKeychain) -> None:
    import secretstorage

    store = SecretStore()
    store.set("hf_token", "hf_lockedSentinel0123456789")
    connection = secretstorage.dbus_init()
    try:
        secretstorage.get_default_collection(connection).lock()
    finally:
        connection.close()

    with pytest.raises(SecretStoreError) as raised:
        store.get("hf_token")
    message = str(raised.value)
    assert "locked" in message
    assert "Secret Service (gnome-keyring)" in message
    assert "FTDESK_HF_TOKEN" in message
    assert "hf_lockedSentinel0123456789" not in message


def test_secret_service_absent_from_the_bus(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from keyring.backends import SecretService

    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", f"unix:path={tmp_path / 'no-bus'}")
    store = SecretStore(SecretService.Keyring(), timeout_s=5)  # type: ignore[no-untyped-call]

    start = time.monotonic()
    with pytest.raises(SecretStoreError) as raised:
        store.get("runpod_api_key")
    assert time.monotonic() - start < 5
    message = str(raised.value)
    assert "Secret Service" in message
    assert "FTDESK_RUNPOD_API_KEY" in message
    assert "gnome-keyring" in message  # the way out names a keychain to install


# -- no keychain ---------------------------------------------------------------------------------


def test_no_keychain_names_the_problem_and_the_way_out() -> None:
    keyring.set_keyring(fail.Keyring())  # type: ignore[no-untyped-call]
    store = SecretStore()

    calls: list[Callable[[], object]] = [
        lambda: store.get("hf_token"),
        lambda: store.set("hf_token", "x" * 20),
    ]
    for call in calls:
        with pytest.raises(SecretStoreError) as raised:
            call()
        message = str(raised.value)
        assert "no usable backend" in message
        assert "FTDESK_HF_TOKEN" in message
        assert "gnome-keyring" in message and "KWallet" in message
        assert "x" * 20 not in message

    status = store.status("hf_token")
    assert status.source == "unavailable" and status.in_keychain is None
    assert status.problem is not None and "FTDESK_HF_TOKEN" in status.problem
    assert store.backend_description() == "no keychain (keyring found no usable backend)"


@pytest.mark.expect_log("Starting the trainer without")
def test_environment_variable_path_without_keychain_writes_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for var in ("HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "FTDESK_HOME"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.chdir(tmp_path)
    keyring.set_keyring(fail.Keyring())  # type: ignore[no-untyped-call]
    sentinel = "hf_envOnlySentinel0123456789"
    monkeypatch.setenv("FTDESK_HF_TOKEN", sentinel)
    store = SecretStore()

    got = store.get("hf_token")
    assert got is not None and got.get_secret_value() == sentinel
    assert store.status("hf_token").source == "environment"
    assert store.trainer_env() == {"HF_TOKEN": sentinel}  # broken keychain: the rest is skipped
    with pytest.raises(SecretStoreError, match="FTDESK_RUNPOD_API_KEY"):
        store.trainer_env(["hf_token", "runpod_api_key"], strict=True)

    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert not [p for p in written if sentinel.encode() in p.read_bytes()]


# -- a keychain that hangs -------------------------------------------------------------------------


def test_hanging_keychain_gives_up_within_timeout_and_recovers() -> None:
    backend = HangingKeyring()
    keyring.set_keyring(backend)
    store = SecretStore(timeout_s=0.5)
    try:
        start = time.monotonic()
        with pytest.raises(SecretStoreError) as raised:
            store.get("hf_token")
        elapsed = time.monotonic() - start
        assert 0.4 < elapsed < 0.5 + 5  # it gave up: the backend hangs until released
        message = str(raised.value)
        assert "did not answer within 0.5 s" in message
        assert "FTDESK_HF_TOKEN" in message
        assert store.backend_description().endswith("(not answering)")

        # While that call is stuck, the next one fails at once instead of piling up threads:
        # its sentence (not "did not answer within") says it never waited on the backend.
        with pytest.raises(SecretStoreError, match="has not answered an earlier request"):
            store.get("hf_token")
    finally:
        backend.release.set()

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        status = store.status("hf_token")
        if status.problem is None:
            break
        time.sleep(0.02)
    got = store.get("hf_token")
    assert got is not None and got.get_secret_value() == backend.value


def test_hanging_keychain_never_blocks_the_event_loop() -> None:
    backend = HangingKeyring()
    keyring.set_keyring(backend)
    store = SecretStore(timeout_s=0.5)

    async def scenario() -> tuple[float, int, str]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        start = time.monotonic()
        try:
            await store.aset("runpod_api_key", "rpa_neverStored0123456789")
        except SecretStoreError as exc:
            message = str(exc)
        else:
            message = ""
        elapsed = time.monotonic() - start
        task.cancel()
        return elapsed, ticks, message

    try:
        elapsed, ticks, message = asyncio.run(scenario())
    finally:
        backend.release.set()
    assert elapsed < 0.5 + 5  # it gave up: the backend hangs until released
    # The loop kept running its other tasks during the wait (a blocked loop ticks at most once;
    # how many more is the machine's load, not the behaviour).
    assert ticks >= 3
    assert "did not answer within 0.5 s" in message and "FTDESK_RUNPOD_API_KEY" in message


@pytest.mark.slow
def test_hung_keychain_call_does_not_keep_the_program_from_exiting(tmp_path: Path) -> None:
    script = tmp_path / "hang.py"
    script.write_text(
        "import threading, keyring\n"
        "from keyring.backend import KeyringBackend\n"
        "from desktop.core.secrets import SecretStore\n"
        "from desktop.core.errors import SecretStoreError\n"
        "class Hang(KeyringBackend):\n"
        "    priority = -1\n"
        "    def get_password(self, s, u): threading.Event().wait()\n"
        "    set_password = delete_password = get_password\n"
        "keyring.set_keyring(Hang())\n"
        "import asyncio\n"
        "store = SecretStore(timeout_s=0.3)\n"
        "calls = (lambda: store.get('hf_token'), lambda: asyncio.run(store.aget('hf_token')))\n"
        "for call in calls:\n"
        "    try:\n"
        "        call()\n"
        "    except SecretStoreError as exc:\n"
        "        print('gave up:', exc)\n"
    )
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("gave up:") == 2
    assert time.monotonic() - start < 30


# -- redaction ---------------------------------------------------------------------------------


def _file_handler(path: Path, fmt: str = "%(levelname)s %(name)s %(message)s") -> logging.Handler:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(fmt))
    return handler


@pytest.mark.expect_log("^inline ", "^request failed$")
def test_logged_secret_appears_in_no_log_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = logging.getLogger()
    old_level = root.level
    root.setLevel(logging.INFO)
    # Handlers that exist when redaction is installed: on root, and on a named logger that
    # does not propagate (its format shows an `extra=` field).
    before = _file_handler(tmp_path / "root-before.log")
    root.addHandler(before)
    extras = logging.getLogger("ftdesk.test.extras")
    extras.propagate = False
    extras_handler = _file_handler(tmp_path / "extras.log", "%(message)s %(token)s")
    extras.addHandler(extras_handler)
    install_redaction()
    # Handlers added later: on root, and on another logger that does not propagate.
    after = _file_handler(tmp_path / "root-after.log")
    root.addHandler(after)
    private = logging.getLogger("ftdesk.test.private")
    private.propagate = False
    own = _file_handler(tmp_path / "private.log", "%(message)s")
    private.addHandler(own)
    attached = ((before, root), (after, root), (own, private), (extras_handler, extras))
    try:
        read_secret = "hf_readFromEnvSentinel0123456789"
        stored_secret = "rpa_storedSentinel0123456789"
        monkeypatch.setenv("FTDESK_HF_TOKEN", read_secret)
        store = SecretStore(MemoryKeyring())
        assert store.get("hf_token") is not None  # registered by reading
        store.set("runpod_api_key", stored_secret)  # registered by writing

        log = logging.getLogger("ftdesk.test.public")
        log.info("token is %s", read_secret)
        log.warning("inline " + stored_secret)
        log.info("mapping %(key)s", {"key": stored_secret})
        try:
            raise RuntimeError(f"401 for key {read_secret}")
        except RuntimeError:
            log.exception("request failed")
        private.info("private %s", stored_secret)
        extras.info("extra %s", read_secret, extra={"token": stored_secret})
        # A record that bypasses the record factory still meets the handler filter.
        before.handle(logging.makeLogRecord({"msg": "rebuilt %s", "args": (stored_secret,)}))
    finally:
        for handler, logger in attached:
            logger.removeHandler(handler)
            handler.close()
        root.setLevel(old_level)
        private.propagate = extras.propagate = True
        uninstall_redaction()

    texts = {p.name: p.read_text(encoding="utf-8") for p in tmp_path.glob("*.log")}
    assert set(texts) == {"root-before.log", "root-after.log", "private.log", "extras.log"}
    for name, text in texts.items():
        assert read_secret not in text, name
        assert stored_secret not in text, name
        assert "***" in text, name
    assert "token is ***" in texts["root-after.log"]
    assert "RuntimeError: 401 for key ***" in texts["root-before.log"]
    assert "rebuilt ***" in texts["root-before.log"]
    assert texts["private.log"].strip() == "private ***"
    assert texts["extras.log"].strip() == "extra *** ***"


def test_redact_for_other_sinks(redaction: None) -> None:
    register_secret("abcd1234")
    register_secret("abcd1234XYZ-longer")
    assert redact("a abcd1234XYZ-longer b abcd1234 c") == "a *** b *** c"
    assert redact("no secret here") == "no secret here"
    register_secret("ab")  # too short to be a key; masking it would mangle ordinary text
    assert redact("abstract") == "abstract"


def test_known_secrets_callable_is_masked(tmp_path: Path) -> None:
    source_values = ["from-callable-sentinel-0123"]
    install_redaction(lambda: source_values)
    log = logging.getLogger("ftdesk.test.callable")
    handler = _file_handler(tmp_path / "c.log")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        log.info("value=%s", "from-callable-sentinel-0123")
        assert redact("x from-callable-sentinel-0123 y") == "x *** y"
    finally:
        log.removeHandler(handler)
        handler.close()
        uninstall_redaction()
    text = (tmp_path / "c.log").read_text(encoding="utf-8")
    assert "from-callable-sentinel-0123" not in text and "value=***" in text


# -- bad names and values ----------------------------------------------------------------------


def test_unknown_secret_name_lists_the_valid_ones() -> None:
    store = SecretStore(MemoryKeyring())
    calls: list[Any] = [
        lambda: store.get("hf_tokn"),
        lambda: store.set("hf_tokn", "value-0123456789"),
        lambda: store.delete("hf_tokn"),
        lambda: store.status("hf_tokn"),
        lambda: store.trainer_env(["hf_tokn"]),
    ]
    for call in calls:
        with pytest.raises(InvalidSecretError) as raised:
            call()
        message = str(raised.value)
        assert "'hf_tokn'" in message
        for valid in ("runpod_api_key", "hf_token", "wandb_api_key"):
            assert valid in message
        assert raised.value.exit_code == 2


def test_empty_value_is_refused() -> None:
    backend = MemoryKeyring()
    store = SecretStore(backend)
    with pytest.raises(InvalidSecretError, match="hf_token is empty"):
        store.set("hf_token", "  \n")
    assert backend.items == {}


def test_names_map_to_trainer_and_override_variables() -> None:
    assert {n.value: (n.trainer_env_var, n.override_env_var) for n in TRAINER_SECRETS} == {
        "runpod_api_key": ("RUNPOD_API_KEY", "FTDESK_RUNPOD_API_KEY"),
        "hf_token": ("HF_TOKEN", "FTDESK_HF_TOKEN"),
        "wandb_api_key": ("WANDB_API_KEY", "FTDESK_WANDB_API_KEY"),
    }
    # The SSH key's passphrase is the app's own: every other name is a trainer's.
    assert set(SecretName) - set(TRAINER_SECRETS) == {SecretName.SSH_PASSPHRASE}
    assert SecretName.SSH_PASSPHRASE.override_env_var == "FTDESK_SSH_PASSPHRASE"


def test_the_ssh_passphrase_never_reaches_a_trainer(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    store = SecretStore()
    store.set("ssh_passphrase", "pass-SENTINEL-for-ssh")
    store.set("hf_token", "hf_SENTINELSENTINEL")
    monkeypatch.setenv("FTDESK_WANDB_API_KEY", "wandb-SENTINEL")
    env = store.trainer_env()
    assert env == {"HF_TOKEN": "hf_SENTINELSENTINEL", "WANDB_API_KEY": "wandb-SENTINEL"}
    assert "pass-SENTINEL-for-ssh" not in env.values()
    with pytest.raises(InvalidSecretError, match="ssh_passphrase is the app's own secret"):
        store.trainer_env(["hf_token", "ssh_passphrase"])
    # The app itself reads it (the Slurm provider's factory).
    got = store.get(SecretName.SSH_PASSPHRASE)
    assert got is not None and got.get_secret_value() == "pass-SENTINEL-for-ssh"
