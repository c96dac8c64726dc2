//! The control documents several servers share, in the `control_documents` table: one row per
//! document, written in one statement that raises its revision only if it still has the revision
//! the write was prepared from (`docs/storage.md`, "Several servers"). Polling reads every
//! document's name and revision, nothing else.

use std::collections::BTreeMap;

use eventdbx_store::documents::{ControlDocument, ControlDocuments, Expected};
use eventdbx_store::Result;

use crate::{col, db, pool_error, signed, unsigned, Cached, PostgresStore};

impl ControlDocuments for PostgresStore {
    fn read(&self, name: &str) -> Result<Option<ControlDocument>> {
        let pool = self.pool();
        let name = name.to_owned();
        self.run(async move {
            let client = pool.get().await.map_err(pool_error)?;
            let row = client
                .query_opt_cached(
                    "SELECT body, revision FROM control_documents WHERE name = $1",
                    &[&name],
                )
                .await
                .map_err(db)?;
            row.map(|row| {
                Ok(ControlDocument {
                    body: col(&row, 0)?,
                    revision: unsigned(col(&row, 1)?),
                })
            })
            .transpose()
        })
    }

    fn write(&self, name: &str, body: &[u8], expected: Expected) -> Result<Option<u64>> {
        let pool = self.pool();
        let (name, body) = (name.to_owned(), body.to_vec());
        self.run(async move {
            let client = pool.get().await.map_err(pool_error)?;
            let row = match expected {
                Expected::Absent => client
                    .query_opt_cached(
                        "INSERT INTO control_documents (name, body, revision) VALUES ($1, $2, 1) \
                         ON CONFLICT DO NOTHING RETURNING revision",
                        &[&name, &body],
                    )
                    .await
                    .map_err(db)?,
                Expected::Revision(revision) => client
                    .query_opt_cached(
                        "UPDATE control_documents SET body = $2, revision = revision + 1 \
                         WHERE name = $1 AND revision = $3 RETURNING revision",
                        &[&name, &body, &signed(revision)],
                    )
                    .await
                    .map_err(db)?,
                Expected::Any => client
                    .query_opt_cached(
                        "INSERT INTO control_documents (name, body, revision) VALUES ($1, $2, 1) \
                         ON CONFLICT (name) DO UPDATE \
                         SET body = excluded.body, revision = control_documents.revision + 1 \
                         RETURNING revision",
                        &[&name, &body],
                    )
                    .await
                    .map_err(db)?,
            };
            row.map(|row| col::<i64>(&row, 0).map(unsigned)).transpose()
        })
    }

    fn revisions(&self) -> Result<BTreeMap<String, u64>> {
        let pool = self.pool();
        self.run(async move {
            let client = pool.get().await.map_err(pool_error)?;
            let rows = client
                .query_cached("SELECT name, revision FROM control_documents", &[])
                .await
                .map_err(db)?;
            rows.iter()
                .map(|row| Ok((col(row, 0)?, unsigned(col(row, 1)?))))
                .collect()
        })
    }
}
