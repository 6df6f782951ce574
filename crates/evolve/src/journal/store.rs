//! The two databases a journal can live in, behind one small interface: the embedded SQLite file of
//! a search directory (one machine), and a PostgreSQL server (many machines). SQL is written once,
//! with `?N` placeholders, and typed values; each backend adapts them.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

/// Where a journal lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `DIR/journal.sqlite`.
    Sqlite(PathBuf),
    /// A `postgresql://` (or `postgres://`) URL.
    Postgres(String),
}

impl Location {
    /// A PostgreSQL URL, a search directory, or a `.sqlite` file.
    pub fn parse(spec: &str) -> Location {
        if spec.starts_with("postgresql://") || spec.starts_with("postgres://") {
            return Location::Postgres(spec.to_string());
        }
        let path = Path::new(spec);
        if path.is_dir() || !spec.ends_with(".sqlite") {
            Location::Sqlite(path.join(crate::export::JOURNAL_FILE))
        } else {
            Location::Sqlite(path.to_path_buf())
        }
    }

    /// For messages: the file, or the URL without its password.
    pub fn display(&self) -> String {
        match self {
            Location::Sqlite(p) => p.display().to_string(),
            Location::Postgres(url) => redact(url),
        }
    }
}

/// `postgresql://user:secret@host/db` → `postgresql://user:***@host/db`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    match rest.split_once('@') {
        Some((user, host)) if user.contains(':') => {
            let name = user.split(':').next().unwrap_or("");
            format!("{scheme}://{name}:***@{host}")
        }
        _ => url.to_string(),
    }
}

/// A typed SQL value (typed even when NULL: PostgreSQL wants to know).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(Option<i64>),
    Real(Option<f64>),
    Text(Option<String>),
}

impl Value {
    pub fn int(&self) -> Option<i64> {
        match self {
            Value::Int(v) => *v,
            Value::Real(v) => v.map(|f| f as i64),
            Value::Text(_) => None,
        }
    }
    pub fn real(&self) -> Option<f64> {
        match self {
            Value::Real(v) => *v,
            Value::Int(v) => v.map(|i| i as f64),
            Value::Text(_) => None,
        }
    }
    pub fn text(&self) -> Option<&str> {
        match self {
            Value::Text(v) => v.as_deref(),
            _ => None,
        }
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(Some(v))
    }
}
impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Int(Some(v as i64))
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Real(Some(v))
    }
}
impl From<Option<f64>> for Value {
    fn from(v: Option<f64>) -> Self {
        Value::Real(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(Some(v.to_string()))
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(Some(v))
    }
}
impl From<Option<String>> for Value {
    fn from(v: Option<String>) -> Self {
        Value::Text(v)
    }
}
impl From<Option<u64>> for Value {
    fn from(v: Option<u64>) -> Self {
        Value::Int(v.map(|v| v as i64))
    }
}
impl From<Option<&str>> for Value {
    fn from(v: Option<&str>) -> Self {
        Value::Text(v.map(str::to_string))
    }
}

pub type Row = Vec<Value>;

/// An open connection.
pub enum Store {
    Sqlite(rusqlite::Connection),
    Postgres(RefCell<postgres::Client>),
}

/// The tables, in SQLite's (`INTEGER`, `REAL`) or PostgreSQL's (`BIGINT`, `DOUBLE PRECISION`) types.
fn schema(int: &str, real: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS study (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trials (
  trial {int} PRIMARY KEY, generation {int} NOT NULL, candidate {int} NOT NULL,
  genome TEXT NOT NULL, params TEXT NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'complete', 'failed')),
  fitness {real}, item_scores TEXT, items {int}, seconds {real}, merge_seconds {real},
  generated_tokens {int}, truncated {int}, error TEXT, started_at {real}, finished_at {real}, worker TEXT,
  phase TEXT NOT NULL DEFAULT 'ps', path TEXT, queued_at {real}, lease_until {real}, wait_seconds {real},
  plan TEXT, item_ids TEXT, rescore_of {int}
);"
    )
}

fn sqlite_schema() -> String {
    schema("INTEGER", "REAL")
}

/// Columns of the trial table after the first format, with their SQLite declarations.
const ADDED_COLUMNS: [(&str, &str); 8] = [
    ("phase", "TEXT NOT NULL DEFAULT 'ps'"),
    ("path", "TEXT"),
    ("queued_at", "REAL"),
    ("lease_until", "REAL"),
    ("wait_seconds", "REAL"),
    // Cheap fitness: the trial's evaluation plan, the items it answered, the trial it re-scores.
    ("plan", "TEXT"),
    ("item_ids", "TEXT"),
    ("rescore_of", "INTEGER"),
];

/// The columns PostgreSQL journals of earlier versions lack.
const ADDED_POSTGRES_COLUMNS: &str = "ALTER TABLE trials ADD COLUMN IF NOT EXISTS plan TEXT;
  ALTER TABLE trials ADD COLUMN IF NOT EXISTS item_ids TEXT;
  ALTER TABLE trials ADD COLUMN IF NOT EXISTS rescore_of BIGINT;";

impl Store {
    /// Connect (creating the tables if needed).
    pub fn open(location: &Location) -> Result<Store, String> {
        match location {
            Location::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path).map_err(|e| e.to_string())?;
                conn.busy_timeout(std::time::Duration::from_secs(60)).map_err(|e| e.to_string())?;
                conn.pragma_update(None, "journal_mode", "WAL").map_err(|e| e.to_string())?;
                // Every committed trial survives a power cut, not only a killed process.
                conn.pragma_update(None, "synchronous", "FULL").map_err(|e| e.to_string())?;
                let store = Store::Sqlite(conn);
                store.migrate_sqlite()?;
                Ok(store)
            }
            Location::Postgres(url) => {
                let client = postgres::Client::connect(url, postgres::NoTls).map_err(|e| {
                    format!(
                        "cannot connect to the PostgreSQL journal at {}: {e}; check that the server runs and that \
                         user, host, port and database in the URL are right",
                        redact(url)
                    )
                })?;
                let store = Store::Postgres(RefCell::new(client));
                // Workers starting together must not race on CREATE TABLE: the lock is held until the
                // tables are committed (a session lock released before the commit would not do).
                store.batch(&format!(
                    "BEGIN; SELECT pg_advisory_xact_lock(7240514); {} {ADDED_POSTGRES_COLUMNS} COMMIT;",
                    schema("BIGINT", "DOUBLE PRECISION")
                ))?;
                Ok(store)
            }
        }
    }

    /// Journals of the first format: add the later columns, and drop the status check that did not
    /// know `pending` (SQLite cannot alter a check, so the table is copied).
    fn migrate_sqlite(&self) -> Result<(), String> {
        let existing: Option<String> = self
            .query("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'trials'", &[])?
            .first()
            .and_then(|r| r[0].text().map(str::to_string));
        let Some(sql) = existing else {
            return self.batch(&sqlite_schema());
        };
        self.batch("CREATE TABLE IF NOT EXISTS study (key TEXT PRIMARY KEY, value TEXT NOT NULL);")?;
        for (column, declaration) in ADDED_COLUMNS {
            let present = self.query("SELECT COUNT(*) FROM pragma_table_info('trials') WHERE name = ?1", &[column.into()])?;
            if present.first().and_then(|r| r[0].int()) == Some(0) {
                self.batch(&format!("ALTER TABLE trials ADD COLUMN {column} {declaration}"))?;
            }
        }
        if !sql.contains("'pending'") {
            let columns = "trial, generation, candidate, genome, params, status, fitness, item_scores, items, seconds, \
                           merge_seconds, generated_tokens, truncated, error, started_at, finished_at, worker, phase, path, \
                           queued_at, lease_until, wait_seconds, plan, item_ids, rescore_of";
            self.batch(&format!(
                "BEGIN IMMEDIATE; ALTER TABLE trials RENAME TO trials_format1; {schema}
                 INSERT INTO trials ({columns}) SELECT {columns} FROM trials_format1; DROP TABLE trials_format1; COMMIT;",
                schema = sqlite_schema()
            ))?;
        }
        Ok(())
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Store::Postgres(_))
    }

    /// Statements without parameters or results.
    pub fn batch(&self, sql: &str) -> Result<(), String> {
        match self {
            Store::Sqlite(c) => c.execute_batch(sql).map_err(|e| e.to_string()),
            Store::Postgres(c) => c.borrow_mut().batch_execute(sql).map_err(|e| pg_error(&e)),
        }
    }

    /// One statement; the number of rows it changed.
    pub fn execute(&self, sql: &str, params: &[Value]) -> Result<u64, String> {
        match self {
            Store::Sqlite(c) => {
                let values: Vec<rusqlite::types::Value> = params.iter().map(to_sqlite).collect();
                c.execute(sql, rusqlite::params_from_iter(values)).map(|n| n as u64).map_err(|e| e.to_string())
            }
            Store::Postgres(c) => {
                let boxed = to_postgres(params);
                let refs: Vec<&(dyn postgres::types::ToSql + Sync)> = boxed.iter().map(|b| b.as_ref()).collect();
                c.borrow_mut().execute(&dollar_placeholders(sql), &refs).map_err(|e| pg_error(&e))
            }
        }
    }

    /// One query; its rows.
    pub fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>, String> {
        match self {
            Store::Sqlite(c) => {
                let values: Vec<rusqlite::types::Value> = params.iter().map(to_sqlite).collect();
                let mut stmt = c.prepare_cached(sql).map_err(|e| e.to_string())?;
                let n = stmt.column_count();
                let rows = stmt
                    .query_map(rusqlite::params_from_iter(values), |r| {
                        (0..n)
                            .map(|i| {
                                Ok(match r.get_ref(i)? {
                                    rusqlite::types::ValueRef::Null => Value::Text(None),
                                    rusqlite::types::ValueRef::Integer(v) => Value::Int(Some(v)),
                                    rusqlite::types::ValueRef::Real(v) => Value::Real(Some(v)),
                                    rusqlite::types::ValueRef::Text(t) => {
                                        Value::Text(Some(String::from_utf8_lossy(t).into_owned()))
                                    }
                                    rusqlite::types::ValueRef::Blob(_) => Value::Text(None),
                                })
                            })
                            .collect::<rusqlite::Result<Row>>()
                    })
                    .map_err(|e| e.to_string())?;
                rows.collect::<rusqlite::Result<Vec<Row>>>().map_err(|e| e.to_string())
            }
            Store::Postgres(c) => {
                let boxed = to_postgres(params);
                let refs: Vec<&(dyn postgres::types::ToSql + Sync)> = boxed.iter().map(|b| b.as_ref()).collect();
                let rows = c.borrow_mut().query(&dollar_placeholders(sql), &refs).map_err(|e| pg_error(&e))?;
                rows.iter().map(from_postgres).collect()
            }
        }
    }
}

fn to_sqlite(v: &Value) -> rusqlite::types::Value {
    use rusqlite::types::Value as V;
    match v {
        Value::Int(Some(i)) => V::Integer(*i),
        Value::Real(Some(f)) => V::Real(*f),
        Value::Text(Some(s)) => V::Text(s.clone()),
        _ => V::Null,
    }
}

fn to_postgres(params: &[Value]) -> Vec<Box<dyn postgres::types::ToSql + Sync>> {
    params
        .iter()
        .map(|v| -> Box<dyn postgres::types::ToSql + Sync> {
            match v {
                Value::Int(i) => Box::new(*i),
                Value::Real(f) => Box::new(*f),
                Value::Text(s) => Box::new(s.clone()),
            }
        })
        .collect()
}

fn from_postgres(row: &postgres::Row) -> Result<Row, String> {
    use postgres::types::Type;
    (0..row.len())
        .map(|i| {
            let ty = row.columns()[i].type_().clone();
            let e = |e: postgres::Error| pg_error(&e);
            Ok(if ty == Type::INT8 {
                Value::Int(row.try_get::<_, Option<i64>>(i).map_err(e)?)
            } else if ty == Type::INT4 {
                Value::Int(row.try_get::<_, Option<i32>>(i).map_err(e)?.map(i64::from))
            } else if ty == Type::FLOAT8 {
                Value::Real(row.try_get::<_, Option<f64>>(i).map_err(e)?)
            } else if ty == Type::FLOAT4 {
                Value::Real(row.try_get::<_, Option<f32>>(i).map_err(e)?.map(f64::from))
            } else if ty == Type::BOOL {
                Value::Int(row.try_get::<_, Option<bool>>(i).map_err(e)?.map(i64::from))
            } else {
                Value::Text(row.try_get::<_, Option<String>>(i).map_err(e)?)
            })
        })
        .collect()
}

fn pg_error(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => e.to_string(),
    }
}

/// `?1` → `$1` (PostgreSQL's placeholders).
fn dollar_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(|d| d.is_ascii_digit()) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_and_urls() {
        assert_eq!(dollar_placeholders("a = ?1 AND b = ?12"), "a = $1 AND b = $12");
        assert_eq!(redact("postgresql://u:secret@h:5432/db"), "postgresql://u:***@h:5432/db");
        assert_eq!(redact("postgresql://u@h/db"), "postgresql://u@h/db");
        assert_eq!(Location::parse("postgres://h/db"), Location::Postgres("postgres://h/db".into()));
        assert_eq!(Location::parse("runs/x"), Location::Sqlite(PathBuf::from("runs/x/journal.sqlite")));
    }
}
