//! The guest's app registry: which app may receive which (task, resource).
//!
//! The embedder declares its apps and, per task, the resources the task may claim. A bundle
//! whose signed (app, task, resource) is not declared here is refused (`WrongTask`), and a claim
//! by any other app is refused at claim time.

use alloc::collections::{BTreeMap, BTreeSet};

/// Registry of apps and what each task of theirs may claim.
#[derive(Debug, Default, Clone)]
pub struct AppRegistry {
    /// (task id, resource id) -> the app that owns it.
    entries: BTreeMap<(u64, u64), u32>,
    apps: BTreeSet<u32>,
}

/// Why a registration was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Another app already owns this (task, resource).
    #[error("task {task_id} resource {resource_id} already belongs to app {owner}; give each app its own task ids")]
    Taken {
        /// The task.
        task_id: u64,
        /// The resource.
        resource_id: u64,
        /// Its owner.
        owner: u32,
    },
    /// The app was not registered first.
    #[error("app {0} is not registered; call register_app first")]
    UnknownApp(u32),
}

impl AppRegistry {
    /// An empty registry: every bundle is refused until apps are declared.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares an app.
    pub fn register_app(&mut self, app_id: u32) {
        self.apps.insert(app_id);
    }

    /// Lets `app_id`'s task `task_id` receive and claim `resource_id`.
    pub fn allow(
        &mut self,
        app_id: u32,
        task_id: u64,
        resource_id: u64,
    ) -> Result<(), RegistryError> {
        if !self.apps.contains(&app_id) {
            return Err(RegistryError::UnknownApp(app_id));
        }
        match self.entries.get(&(task_id, resource_id)) {
            Some(&owner) if owner != app_id => Err(RegistryError::Taken {
                task_id,
                resource_id,
                owner,
            }),
            _ => {
                self.entries.insert((task_id, resource_id), app_id);
                Ok(())
            }
        }
    }

    /// True if `app_id` owns (task, resource).
    pub fn permits(&self, app_id: u32, task_id: u64, resource_id: u64) -> bool {
        self.entries.get(&(task_id, resource_id)) == Some(&app_id)
    }

    /// The app that owns (task, resource), if any.
    pub fn owner(&self, task_id: u64, resource_id: u64) -> Option<u32> {
        self.entries.get(&(task_id, resource_id)).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_declared_app_is_permitted() {
        let mut r = AppRegistry::new();
        assert_eq!(r.allow(1, 10, 100), Err(RegistryError::UnknownApp(1)));
        r.register_app(1);
        r.register_app(2);
        r.allow(1, 10, 100).unwrap();
        assert!(r.permits(1, 10, 100));
        assert!(!r.permits(2, 10, 100));
        assert!(!r.permits(1, 11, 100));
        assert!(matches!(
            r.allow(2, 10, 100),
            Err(RegistryError::Taken { owner: 1, .. })
        ));
        assert_eq!(r.owner(10, 100), Some(1));
    }
}
