"""Schema upgrades with Alembic, safe when several processes start at once.

Every `mintca serve` calls upgrade(). A database already at head is the usual case, and
Alembic's machinery (importing it, loading every migration module, building the revision
graph) cost a tenth of start-up for nothing: the head is read from the migration files'
`revision`/`down_revision` assignments without importing them, and compared with the
database's `alembic_version`. Anything else, or anything this reading does not understand
(several heads, a file it cannot parse), goes through Alembic exactly as before."""

from __future__ import annotations

import ast
import fcntl
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from app.db.engine import secure_sqlite_file
from app.files import create_private_file

if TYPE_CHECKING:
    from alembic.config import Config

_ROOT = Path(__file__).resolve().parents[2]
VERSIONS = _ROOT / "migrations" / "versions"
# Any constant works; it names the lock that serialises migrations on PostgreSQL.
_PG_MIGRATION_LOCK = 0x4D494E54


def alembic_config() -> Config:
    from alembic.config import Config

    config = Config(str(_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(_ROOT / "migrations"))
    return config


def upgrade(url: str) -> None:
    """Upgrade the schema to head. SQLite: a file lock beside the database; PostgreSQL: an
    advisory lock, so replicas starting together migrate once and the others wait. A
    database already at head is left alone without Alembic (see the module docstring)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = Path(parsed.database or "mintca.db")
        database.parent.mkdir(parents=True, exist_ok=True)
        secure_sqlite_file(url)  # the first connection of a new CA is this one
        if is_at_head(url):
            return
        config = alembic_config()
        create_private_file(Path(f"{database}.lock"))
        with open(f"{database}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            _run(config, url)
        return
    if is_at_head(url):
        return
    from alembic import command

    config = alembic_config()
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
            connection.commit()
            try:
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
                connection.commit()
            finally:
                connection.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": _PG_MIGRATION_LOCK}
                )
                connection.commit()
    finally:
        engine.dispose()


def _run(config: Config, url: str) -> None:
    from alembic import command

    engine = create_engine(url, connect_args={"timeout": 30})
    try:
        with engine.connect() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            connection.commit()
    finally:
        engine.dispose()


def is_at_head(url: str) -> bool:
    """True when the database's one stored revision is the migration scripts' one head; False
    when it is not, when there is no `alembic_version` table yet, or when the scripts' head
    cannot be read without Alembic."""
    head = script_head(VERSIONS)
    parsed = make_url(url)
    if head is None or (
        parsed.get_backend_name() == "sqlite"
        and not (parsed.database and Path(parsed.database).is_file())  # never create one here
    ):
        return False
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            stored = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    except DBAPIError:  # no table: an empty database, which Alembic initialises
        return False
    finally:
        engine.dispose()
    return [row[0] for row in stored] == [head]


def script_head(versions: Path) -> str | None:
    """The one head revision of the migration files in `versions`, from their module-level
    `revision` and `down_revision` literals; None if there is not exactly one head or a file
    does not say both plainly (Alembic then decides)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in sorted(versions.glob("*.py")):
        if path.name.startswith("_"):
            continue
        assigned = _literals(path)
        revision, down = assigned.get("revision"), assigned.get("down_revision", ...)
        if not isinstance(revision, str) or down is ...:
            return None
        revisions.add(revision)
        if isinstance(down, str):
            parents.add(down)
        elif isinstance(down, tuple | list) and all(isinstance(d, str) for d in down):
            parents.update(down)
        elif down is not None:
            return None
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 and parents <= revisions else None


def _literals(path: Path) -> dict[str, object]:
    """Module-level `name = <literal>` and `name: type = <literal>` assignments of a file."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (SyntaxError, UnicodeDecodeError, OSError):
        return {}
    found: dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name):
            try:
                found[target.id] = ast.literal_eval(value)
            except ValueError:
                continue
    return found
