//! The Mixer and Istio resources a conversion reads: resources by kind and name (a later one
//! replaces an earlier one), and Mixer's instances and handlers however they were declared.

#![allow(
    clippy::indexing_slicing,
    reason = "only serde_json::Value is indexed here, by key: a missing key reads as Null, never a panic"
)]

use std::collections::BTreeMap;

use serde_json::Value;

/// One Mixer or Istio resource, where it came from.
#[derive(Clone)]
pub(super) struct Resource {
    pub(super) file: String,
    pub(super) kind: String,
    pub(super) name: String,
    pub(super) spec: Value,
}

impl Resource {
    pub(super) fn at(&self) -> String {
        format!("{}: {} {}", self.file, self.kind, self.name)
    }
}

/// The resources in force, by kind and name, in the order they were first applied.
#[derive(Default)]
pub(super) struct Resources {
    pub(super) order: Vec<(String, String)>,
    pub(super) by_key: BTreeMap<(String, String), Resource>,
}

impl Resources {
    pub(super) fn add(&mut self, file: &str, text: &str) -> Result<(), String> {
        for value in crate::yaml::documents(text)? {
            let kind = value["kind"]
                .as_str()
                .ok_or("a document without kind")?
                .to_owned();
            let name = value["metadata"]["name"]
                .as_str()
                .ok_or_else(|| format!("a {kind} without metadata.name"))?
                .to_owned();
            let key = (kind.clone(), name.clone());
            if !self.by_key.contains_key(&key) {
                self.order.push(key.clone());
            }
            let spec = value.get("spec").cloned().unwrap_or(Value::Null);
            self.by_key.insert(
                key,
                Resource {
                    file: file.to_owned(),
                    kind,
                    name,
                    spec,
                },
            );
        }
        Ok(())
    }

    pub(super) fn all(&self) -> impl Iterator<Item = &Resource> {
        self.order.iter().filter_map(|key| self.by_key.get(key))
    }
}

/// A Mixer instance or handler, whichever way it was declared: `kind: logentry` with its
/// parameters as spec, or `kind: instance` with `compiledTemplate` (or `template`) and `params`;
/// likewise handlers and their adapter.
pub(super) struct Component<'a> {
    pub(super) resource: &'a Resource,
    /// The template (`logentry`, `listentry`) or adapter (`stdio`, `listchecker`).
    pub(super) of: String,
    pub(super) params: &'a Value,
}

/// What a Mixer resource is to a rule: an instance (what is sent) or a handler (where to).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Instance,
    Handler,
}

impl Role {
    /// The generic kind of the role, and the spec keys that name its template or adapter.
    pub(super) fn generic(self) -> (&'static str, [&'static str; 2]) {
        match self {
            Role::Instance => ("instance", ["compiledTemplate", "template"]),
            Role::Handler => ("handler", ["compiledAdapter", "adapter"]),
        }
    }

    /// The role of a Mixer kind of its own (`logentry`, `stdio`...), if it is one.
    pub(super) fn of_kind(kind: &str) -> Option<Role> {
        if MIXER_TEMPLATES.contains(&kind) {
            Some(Role::Instance)
        } else if MIXER_ADAPTERS.contains(&kind) {
            Some(Role::Handler)
        } else {
            None
        }
    }
}

pub(super) fn components(resources: &Resources, role: Role) -> Vec<Component<'_>> {
    let (generic, keys) = role.generic();
    resources
        .all()
        .filter_map(|resource| {
            if resource.kind == generic {
                let of = keys
                    .iter()
                    .find_map(|k| resource.spec[*k].as_str())?
                    .to_owned();
                Some(Component {
                    resource,
                    of,
                    params: &resource.spec["params"],
                })
            } else if Role::of_kind(&resource.kind) == Some(role) {
                Some(Component {
                    resource,
                    of: resource.kind.clone(),
                    params: &resource.spec,
                })
            } else {
                None
            }
        })
        .collect()
}

/// Mixer's instance kinds (templates) and handler kinds (adapters) that this reads.
const MIXER_TEMPLATES: &[&str] = &["logentry", "listentry", "metric", "quota", "checknothing"];
const MIXER_ADAPTERS: &[&str] = &["stdio", "listchecker", "prometheus", "denier", "memquota"];

/// A reference from a rule's action (`egress-access.logentry`, `path-checker.listchecker`,
/// `name.kind.namespace`, or a plain name) to the component of that name.
pub(super) fn find<'a>(
    components: &'a [Component<'a>],
    reference: &str,
) -> Option<&'a Component<'a>> {
    components
        .iter()
        .find(|c| c.resource.name == reference)
        .or_else(|| {
            let name = reference.split('.').next()?;
            components.iter().find(|c| c.resource.name == name)
        })
}
