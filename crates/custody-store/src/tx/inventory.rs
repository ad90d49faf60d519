//! The schema as the database reports it, for the test that holds the inventory to it.

use crate::Backend;

use super::{R, Tx, text};

impl Tx {
    /// Every `(table, column)` of the schema, as the backend's catalogue lists them.
    pub async fn schema_columns(&mut self) -> R<Vec<(String, String)>> {
        let q = match self.backend {
            Backend::Sqlite => sqlx::query(
                "SELECT m.name AS t, p.name AS c FROM sqlite_master m \
                 JOIN pragma_table_info(m.name) p WHERE m.type = 'table' ORDER BY t, c",
            ),
            Backend::Postgres => sqlx::query(
                "SELECT CAST(table_name AS TEXT) AS t, CAST(column_name AS TEXT) AS c \
                 FROM information_schema.columns WHERE table_schema = current_schema() \
                 ORDER BY t, c",
            ),
        };
        let rows = self.all(q).await?;
        rows.iter().map(|r| Ok((text(r, "t")?, text(r, "c")?))).collect()
    }
}
