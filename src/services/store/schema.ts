/**
 * The SQLite schema of `studio.db` and its migrations.
 *
 * `PRAGMA user_version` stores how many migrations a database has applied. Migration `i` (0-based)
 * brings a database from version `i` to `i + 1`. Each one runs in its own transaction together with
 * the version bump, so a failure leaves the database at the previous version. Migrations are only
 * ever appended: a released one is never edited, and a database newer than this list is never opened.
 */
import type Database from 'better-sqlite3';

export interface Migration {
  description: string;
  up: (db: Database.Database) => void;
}

const CREATE_TABLES_V1 = `
CREATE TABLE models (
  id              TEXT PRIMARY KEY,
  path            TEXT NOT NULL UNIQUE,
  name            TEXT NOT NULL,
  architecture    TEXT NOT NULL,
  parameter_count INTEGER,
  added_at        TEXT NOT NULL
);

CREATE TABLE datasets (
  id           TEXT PRIMARY KEY,
  name         TEXT NOT NULL,
  source_path  TEXT NOT NULL,
  format       TEXT NOT NULL,
  schema       TEXT NOT NULL,
  sha256       TEXT NOT NULL,
  rows_read    INTEGER NOT NULL,
  rows_kept    INTEGER NOT NULL,
  rows_skipped INTEGER NOT NULL,
  stored_path  TEXT NOT NULL,
  report_json  TEXT NOT NULL,
  created_at   TEXT NOT NULL
);
CREATE INDEX datasets_created_at ON datasets (created_at);

-- A run keeps its config JSON even when its dataset is deleted, so dataset_id only becomes NULL.
CREATE TABLE runs (
  id            TEXT PRIMARY KEY,
  name          TEXT NOT NULL,
  model_path    TEXT NOT NULL,
  dataset_id    TEXT REFERENCES datasets (id) ON DELETE SET NULL,
  method        TEXT NOT NULL CHECK (method IN ('lora', 'qlora')),
  status        TEXT NOT NULL CHECK (status IN
                  ('queued', 'running', 'paused', 'completed', 'failed', 'cancelled', 'interrupted')),
  config_json   TEXT NOT NULL,
  created_at    TEXT NOT NULL,
  started_at    TEXT,
  finished_at   TEXT,
  error_json    TEXT,
  tags_json     TEXT NOT NULL DEFAULT '[]',
  best_val_loss REAL,
  final_loss    REAL,
  steps         INTEGER NOT NULL DEFAULT 0,
  total_steps   INTEGER,
  run_dir       TEXT NOT NULL
);
-- The history table sorts by these columns; status also filters.
CREATE INDEX runs_created_at ON runs (created_at);
CREATE INDEX runs_status_created_at ON runs (status, created_at);
CREATE INDEX runs_name ON runs (name COLLATE NOCASE);
CREATE INDEX runs_best_val_loss ON runs (best_val_loss);
CREATE INDEX runs_final_loss ON runs (final_loss);
CREATE INDEX runs_dataset_id ON runs (dataset_id);

-- Every measurement column is nullable because SQLite stores a NaN as NULL: a diverged step must
-- still be recorded. Reading maps NULL back to NaN (val_loss stays optional).
CREATE TABLE run_metrics (
  run_id       TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
  step         INTEGER NOT NULL,
  epoch        REAL,
  loss         REAL,
  val_loss     REAL,
  lr           REAL,
  grad_norm    REAL,
  tokens_per_s REAL,
  memory_bytes INTEGER,
  time_ms      REAL,
  PRIMARY KEY (run_id, step)
) WITHOUT ROWID;

CREATE TABLE artifacts (
  id         INTEGER PRIMARY KEY AUTOINCREMENT,
  run_id     TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
  kind       TEXT NOT NULL CHECK (kind IN ('checkpoint', 'adapter', 'merged', 'gguf')),
  path       TEXT NOT NULL,
  step       INTEGER,
  created_at TEXT NOT NULL,
  size_bytes INTEGER
);
-- One row per file: reporting the same path again updates its step and size.
CREATE UNIQUE INDEX artifacts_run_kind_path ON artifacts (run_id, kind, path);
CREATE INDEX artifacts_run_kind_step ON artifacts (run_id, kind, step);

CREATE TABLE run_events (
  id      INTEGER PRIMARY KEY AUTOINCREMENT,
  run_id  TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
  time    TEXT NOT NULL,
  level   TEXT NOT NULL CHECK (level IN ('debug', 'info', 'warn', 'error')),
  message TEXT NOT NULL
);
CREATE INDEX run_events_run_id ON run_events (run_id, id);
`;

/** All migrations in order; the schema version of this build is `MIGRATIONS.length`. */
export const MIGRATIONS: readonly Migration[] = [
  {
    description: 'create models, datasets, runs, run_metrics, artifacts and run_events',
    up: (db) => db.exec(CREATE_TABLES_V1),
  },
];

export const SCHEMA_VERSION = MIGRATIONS.length;

/**
 * Applies the migrations a database is missing, each in its own transaction.
 * Returns the versions applied. The caller has already rejected databases newer than SCHEMA_VERSION.
 */
export function migrate(db: Database.Database, migrations: readonly Migration[] = MIGRATIONS): number[] {
  const applied: number[] = [];

  for (let version = readUserVersion(db); version < migrations.length; version++) {
    const migration = migrations[version];
    // BEGIN IMMEDIATE takes the write lock before user_version is read again, so when another
    // process migrated the database meanwhile (two processes opening a new data folder at
    // once), this one reads the new version and skips the migration instead of repeating it.
    const apply = db.transaction((): boolean => {
      if (readUserVersion(db) !== version) return false;
      migration.up(db);
      // user_version is part of the database header, so it commits or rolls back with the DDL.
      db.pragma(`user_version = ${version + 1}`);
      return true;
    });
    if (apply.immediate()) {
      applied.push(version + 1);
    } else {
      version = readUserVersion(db) - 1;
    }
  }

  return applied;
}

export function readUserVersion(db: Database.Database): number {
  return db.pragma('user_version', { simple: true }) as number;
}
