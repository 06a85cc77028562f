//! Accounts, sessions and vehicles on SQLite.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parkd_core::account::{Email, Role, VehicleProfile};
use rusqlite::{OptionalExtension, Row, TransactionBehavior, params};

use super::{SqliteStore, col, from_micros, sq_err};
use crate::common::{class_str, parse_class, parse_email, parse_plate, parse_role, token_hash};
use crate::{AccountStore, SessionRow, StoreError, StoreResult, User, VehicleRow};

const USER_COLUMNS: &str = "user_id, email, password_hash, role, display_name, disabled, \
                            created_at, password_changed_at";
const SESSION_COLUMNS: &str = "session_id, user_id, token_sha256, created_at, last_seen_at, \
                               expires_at, user_agent, ip, revoked_at, revoked_reason";
const VEHICLE_COLUMNS: &str =
    "vehicle_id, user_id, plate, class, ev, accessible_permit, label, created_at";

fn user_from(row: &Row<'_>, at: usize) -> StoreResult<User> {
    const T: &str = "users";
    Ok(User {
        id: col(row, at, T)?,
        email: parse_email(&col::<String>(row, at + 1, T)?)?,
        password_hash: col(row, at + 2, T)?,
        role: parse_role(&col::<String>(row, at + 3, T)?)?,
        display_name: col(row, at + 4, T)?,
        disabled: col(row, at + 5, T)?,
        created_at: from_micros(col(row, at + 6, T)?, T)?,
        password_changed_at: from_micros(col(row, at + 7, T)?, T)?,
    })
}

fn session_from(row: &Row<'_>) -> StoreResult<SessionRow> {
    const T: &str = "sessions";
    Ok(SessionRow {
        id: col(row, 0, T)?,
        user_id: col(row, 1, T)?,
        token_sha256: token_hash(&col::<Vec<u8>>(row, 2, T)?, T)?,
        created_at: from_micros(col(row, 3, T)?, T)?,
        last_seen_at: from_micros(col(row, 4, T)?, T)?,
        expires_at: from_micros(col(row, 5, T)?, T)?,
        user_agent: col(row, 6, T)?,
        ip: col(row, 7, T)?,
        revoked_at: col::<Option<i64>>(row, 8, T)?
            .map(|micros| from_micros(micros, T))
            .transpose()?,
        revoked_reason: col(row, 9, T)?,
    })
}

fn vehicle_from(row: &Row<'_>) -> StoreResult<VehicleRow> {
    const T: &str = "vehicles";
    Ok(VehicleRow {
        id: col(row, 0, T)?,
        user_id: col(row, 1, T)?,
        plate: parse_plate(&col::<String>(row, 2, T)?)?,
        profile: VehicleProfile {
            class: parse_class(&col::<String>(row, 3, T)?)?,
            ev: col(row, 4, T)?,
            accessible_permit: col(row, 5, T)?,
        },
        label: col(row, 6, T)?,
        created_at: from_micros(col(row, 7, T)?, T)?,
    })
}

impl SqliteStore {
    async fn one_user(&self, column: &'static str, value: String) -> StoreResult<Option<User>> {
        self.read(move |conn| {
            let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE {column} = ?1");
            let mut statement = conn.prepare_cached(&sql).map_err(sq_err)?;
            let mut rows = statement.query([value]).map_err(sq_err)?;
            match rows.next().map_err(sq_err)? {
                Some(row) => Ok(Some(user_from(row, 0)?)),
                None => Ok(None),
            }
        })
        .await
    }
}

#[async_trait]
impl AccountStore for SqliteStore {
    async fn create_user(&self, user: &User) -> StoreResult<()> {
        let user = user.clone();
        self.write(move |conn| {
            let sql = format!(
                "INSERT INTO users ({USER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
            );
            conn.prepare_cached(&sql)
                .and_then(|mut s| {
                    s.execute(params![
                        user.id,
                        user.email.as_str(),
                        user.password_hash,
                        user.role.as_str(),
                        user.display_name,
                        user.disabled,
                        user.created_at.timestamp_micros(),
                        user.password_changed_at.timestamp_micros(),
                    ])
                })
                .map_err(sq_err)?;
            Ok(())
        })
        .await
    }

    async fn user(&self, id: &str) -> StoreResult<Option<User>> {
        self.one_user("user_id", id.to_owned()).await
    }

    async fn user_by_email(&self, email: &Email) -> StoreResult<Option<User>> {
        self.one_user("email", email.as_str().to_owned()).await
    }

    async fn users(&self) -> StoreResult<Vec<User>> {
        self.read(|conn| {
            let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY email");
            let mut statement = conn.prepare_cached(&sql).map_err(sq_err)?;
            let mut rows = statement.query([]).map_err(sq_err)?;
            let mut users = Vec::new();
            while let Some(row) = rows.next().map_err(sq_err)? {
                users.push(user_from(row, 0)?);
            }
            Ok(users)
        })
        .await
    }

    async fn set_password(
        &self,
        user_id: &str,
        password_hash: &str,
        at: DateTime<Utc>,
        keep: Option<&str>,
    ) -> StoreResult<u64> {
        let (user_id, hash, keep) = (
            user_id.to_owned(),
            password_hash.to_owned(),
            keep.map(str::to_owned),
        );
        self.write(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sq_err)?;
            let at = at.timestamp_micros();
            let updated = tx
                .execute(
                    "UPDATE users SET password_hash = ?2, password_changed_at = ?3
                     WHERE user_id = ?1",
                    params![user_id, hash, at],
                )
                .map_err(sq_err)?;
            if updated == 0 {
                return Err(StoreError::Conflict(format!("no account {user_id}")));
            }
            let revoked = tx
                .execute(
                    "UPDATE sessions SET revoked_at = ?2, revoked_reason = 'password_changed'
                     WHERE user_id = ?1 AND revoked_at IS NULL AND expires_at > ?2
                       AND (?3 IS NULL OR session_id <> ?3)",
                    params![user_id, at, keep],
                )
                .map_err(sq_err)?;
            tx.commit().map_err(sq_err)?;
            Ok(revoked as u64)
        })
        .await
    }

    async fn set_user_disabled(
        &self,
        user_id: &str,
        disabled: bool,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let user_id = user_id.to_owned();
        self.write(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sq_err)?;
            let updated = tx
                .execute(
                    "UPDATE users SET disabled = ?2 WHERE user_id = ?1",
                    params![user_id, disabled],
                )
                .map_err(sq_err)?;
            if disabled {
                tx.execute(
                    "UPDATE sessions SET revoked_at = ?2, revoked_reason = 'disabled'
                     WHERE user_id = ?1 AND revoked_at IS NULL",
                    params![user_id, at.timestamp_micros()],
                )
                .map_err(sq_err)?;
            }
            tx.commit().map_err(sq_err)?;
            Ok(updated > 0)
        })
        .await
    }

    async fn set_role(&self, user_id: &str, role: Role) -> StoreResult<bool> {
        let user_id = user_id.to_owned();
        self.write(move |conn| {
            let updated = conn
                .execute(
                    "UPDATE users SET role = ?2 WHERE user_id = ?1",
                    params![user_id, role.as_str()],
                )
                .map_err(sq_err)?;
            Ok(updated > 0)
        })
        .await
    }

    async fn create_session(&self, session: &SessionRow) -> StoreResult<()> {
        let s = session.clone();
        self.write(move |conn| {
            let sql = format!(
                "INSERT INTO sessions ({SESSION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
            );
            conn.prepare_cached(&sql)
                .and_then(|mut statement| {
                    statement.execute(params![
                        s.id,
                        s.user_id,
                        s.token_sha256.as_slice(),
                        s.created_at.timestamp_micros(),
                        s.last_seen_at.timestamp_micros(),
                        s.expires_at.timestamp_micros(),
                        s.user_agent,
                        s.ip,
                        s.revoked_at.map(|t| t.timestamp_micros()),
                        s.revoked_reason,
                    ])
                })
                .map_err(sq_err)?;
            Ok(())
        })
        .await
    }

    async fn session_by_token(
        &self,
        token_sha256: &[u8; 32],
    ) -> StoreResult<Option<(SessionRow, User)>> {
        let hash = *token_sha256;
        self.read(move |conn| {
            let sql =
                "SELECT s.session_id, s.user_id, s.token_sha256, s.created_at, s.last_seen_at,
                        s.expires_at, s.user_agent, s.ip, s.revoked_at, s.revoked_reason,
                        u.user_id, u.email, u.password_hash, u.role, u.display_name,
                        u.disabled, u.created_at, u.password_changed_at
                 FROM sessions s JOIN users u ON u.user_id = s.user_id
                 WHERE s.token_sha256 = ?1";
            let mut statement = conn.prepare_cached(sql).map_err(sq_err)?;
            let found = statement
                .query_row([hash.as_slice()], |row| {
                    Ok((session_from(row), user_from(row, 10)))
                })
                .optional()
                .map_err(sq_err)?;
            match found {
                Some((session, user)) => Ok(Some((session?, user?))),
                None => Ok(None),
            }
        })
        .await
    }

    async fn touch_session(&self, session_id: &str, at: DateTime<Utc>) -> StoreResult<()> {
        let session_id = session_id.to_owned();
        self.write(move |conn| {
            conn.prepare_cached("UPDATE sessions SET last_seen_at = ?2 WHERE session_id = ?1")
                .and_then(|mut s| s.execute(params![session_id, at.timestamp_micros()]))
                .map_err(sq_err)?;
            Ok(())
        })
        .await
    }

    async fn revoke_session(
        &self,
        user_id: &str,
        session_id: &str,
        at: DateTime<Utc>,
        reason: &str,
    ) -> StoreResult<bool> {
        let (user_id, session_id, reason) =
            (user_id.to_owned(), session_id.to_owned(), reason.to_owned());
        self.write(move |conn| {
            let updated = conn
                .execute(
                    "UPDATE sessions SET revoked_at = ?3, revoked_reason = ?4
                     WHERE user_id = ?1 AND session_id = ?2 AND revoked_at IS NULL",
                    params![user_id, session_id, at.timestamp_micros(), reason],
                )
                .map_err(sq_err)?;
            Ok(updated > 0)
        })
        .await
    }

    async fn active_sessions(
        &self,
        user_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<SessionRow>> {
        let user_id = user_id.to_owned();
        self.read(move |conn| {
            let sql = format!(
                "SELECT {SESSION_COLUMNS} FROM sessions
                 WHERE user_id = ?1 AND revoked_at IS NULL AND expires_at > ?2
                 ORDER BY created_at DESC"
            );
            let mut statement = conn.prepare_cached(&sql).map_err(sq_err)?;
            let mut rows = statement
                .query(params![user_id, now.timestamp_micros()])
                .map_err(sq_err)?;
            let mut sessions = Vec::new();
            while let Some(row) = rows.next().map_err(sq_err)? {
                sessions.push(session_from(row)?);
            }
            Ok(sessions)
        })
        .await
    }

    async fn add_vehicle(&self, vehicle: &VehicleRow) -> StoreResult<()> {
        let v = vehicle.clone();
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO vehicles (vehicle_id, user_id, plate, plate_key, class, ev,
                                       accessible_permit, label, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    v.id,
                    v.user_id,
                    v.plate.as_str(),
                    v.plate.key(),
                    class_str(v.profile.class),
                    v.profile.ev,
                    v.profile.accessible_permit,
                    v.label,
                    v.created_at.timestamp_micros(),
                ])
            })
            .map_err(sq_err)?;
            Ok(())
        })
        .await
    }

    async fn vehicles(&self, user_id: &str) -> StoreResult<Vec<VehicleRow>> {
        let user_id = user_id.to_owned();
        self.read(move |conn| {
            let sql = format!(
                "SELECT {VEHICLE_COLUMNS} FROM vehicles WHERE user_id = ?1
                 ORDER BY created_at, vehicle_id"
            );
            let mut statement = conn.prepare_cached(&sql).map_err(sq_err)?;
            let mut rows = statement.query([user_id]).map_err(sq_err)?;
            let mut vehicles = Vec::new();
            while let Some(row) = rows.next().map_err(sq_err)? {
                vehicles.push(vehicle_from(row)?);
            }
            Ok(vehicles)
        })
        .await
    }

    async fn delete_vehicle(&self, user_id: &str, vehicle_id: &str) -> StoreResult<bool> {
        let (user_id, vehicle_id) = (user_id.to_owned(), vehicle_id.to_owned());
        self.write(move |conn| {
            let deleted = conn
                .execute(
                    "DELETE FROM vehicles WHERE user_id = ?1 AND vehicle_id = ?2",
                    params![user_id, vehicle_id],
                )
                .map_err(sq_err)?;
            Ok(deleted > 0)
        })
        .await
    }
}
