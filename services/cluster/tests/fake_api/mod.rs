//! A fake Kubernetes API server for the tests: an HTTP/1 server on
//! 127.0.0.1:0 that keeps EndpointSlices and Leases as JSON, answers
//! lists and `?watch=true` requests (watch events as JSON lines, from the
//! resourceVersion asked for, held open for new ones), and creates and
//! replaces Leases with resourceVersion conflicts (409) as the real one
//! does. Only the requests poz-cluster makes are served.

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::get;
use http::StatusCode;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

#[derive(Default)]
struct Store {
    /// The last resourceVersion handed out.
    rv: u64,
    /// EndpointSlices by (namespace, name).
    slices: BTreeMap<(String, String), Value>,
    /// Every EndpointSlice change: (resourceVersion, namespace, event).
    log: Vec<(u64, String, Value)>,
    /// Leases by (namespace, name).
    leases: BTreeMap<(String, String), Value>,
}

pub struct FakeApi {
    pub addr: std::net::SocketAddr,
    store: Arc<Mutex<Store>>,
    /// Bumped at every EndpointSlice change (wakes watches).
    changed: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

type Shared = (Arc<Mutex<Store>>, watch::Sender<u64>);

impl FakeApi {
    pub async fn start() -> FakeApi {
        let store = Arc::new(Mutex::new(Store::default()));
        let (changed, _) = watch::channel(0);
        let shared: Shared = (store.clone(), changed.clone());
        let app = axum::Router::new()
            .route(
                "/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
                get(slices),
            )
            .route(
                "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases",
                axum::routing::post(create_lease),
            )
            .route(
                "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}",
                get(get_lease).put(replace_lease),
            )
            .with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeApi {
            addr,
            store,
            changed,
            task,
        }
    }

    /// A client of this server.
    pub fn client(&self) -> kube::Client {
        let uri: http::Uri = format!("http://{}", self.addr).parse().unwrap();
        kube::Client::try_from(kube::Config::new(uri)).unwrap()
    }

    /// Creates or replaces an EndpointSlice (a watch sees ADDED or
    /// MODIFIED).
    pub fn apply_slice(&self, namespace: &str, mut slice: Value) {
        let name = slice["metadata"]["name"].as_str().unwrap().to_string();
        let mut s = self.store.lock().unwrap();
        s.rv += 1;
        let rv = s.rv;
        slice["metadata"]["resourceVersion"] = json!(rv.to_string());
        slice["metadata"]["namespace"] = json!(namespace);
        let key = (namespace.to_string(), name);
        let kind = if s.slices.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        s.slices.insert(key, slice.clone());
        s.log.push((
            rv,
            namespace.to_string(),
            json!({"type": kind, "object": slice}),
        ));
        drop(s);
        self.changed.send_replace(rv);
    }

    /// Deletes an EndpointSlice (a watch sees DELETED).
    pub fn delete_slice(&self, namespace: &str, name: &str) {
        let mut s = self.store.lock().unwrap();
        let Some(mut slice) = s.slices.remove(&(namespace.to_string(), name.to_string())) else {
            return;
        };
        s.rv += 1;
        let rv = s.rv;
        slice["metadata"]["resourceVersion"] = json!(rv.to_string());
        s.log.push((
            rv,
            namespace.to_string(),
            json!({"type": "DELETED", "object": slice}),
        ));
        drop(s);
        self.changed.send_replace(rv);
    }

    /// The Lease as stored.
    pub fn lease(&self, namespace: &str, name: &str) -> Option<Value> {
        let s = self.store.lock().unwrap();
        s.leases
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Stores a Lease as another (fake) holder wrote it.
    pub fn put_lease(&self, namespace: &str, mut lease: Value) {
        let name = lease["metadata"]["name"].as_str().unwrap().to_string();
        let mut s = self.store.lock().unwrap();
        s.rv += 1;
        lease["metadata"]["resourceVersion"] = json!(s.rv.to_string());
        lease["metadata"]["namespace"] = json!(namespace);
        s.leases.insert((namespace.to_string(), name), lease);
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An EndpointSlice of `service` with `(ip, ready, terminating)`
/// endpoints.
pub fn slice(name: &str, service: &str, port: u16, endpoints: &[(&str, bool, bool)]) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/service-name": service}
        },
        "addressType": "IPv4",
        "endpoints": endpoints.iter().map(|(ip, ready, terminating)| json!({
            "addresses": [ip],
            "conditions": {"ready": ready, "serving": ready, "terminating": terminating}
        })).collect::<Vec<_>>(),
        "ports": [{"name": "grpc", "port": port, "protocol": "TCP"}]
    })
}

fn json_response(code: StatusCode, v: &Value) -> Response {
    Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Body::from(v.to_string()))
        .unwrap()
}

/// A `Status` failure, as the API server answers one.
fn failure(code: StatusCode, reason: &str, message: &str) -> Response {
    json_response(
        code,
        &json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason,
            "code": code.as_u16()
        }),
    )
}

fn query(raw: &Option<String>) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(raw.as_deref().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// Whether `obj`'s labels match a selector of `key=value` terms.
fn selected(obj: &Value, selector: Option<&String>) -> bool {
    let Some(selector) = selector else {
        return true;
    };
    selector.split(',').filter(|t| !t.is_empty()).all(|term| {
        let (k, v) = term.split_once('=').unwrap_or((term, ""));
        obj["metadata"]["labels"][k].as_str() == Some(v)
    })
}

async fn slices(
    State((store, changed)): State<Shared>,
    Path(ns): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let q = query(&raw);
    let selector = q.get("labelSelector").cloned();
    let watching = q.get("watch").is_some_and(|w| w == "true" || w == "1");
    if !watching {
        let s = store.lock().unwrap();
        let items: Vec<Value> = s
            .slices
            .iter()
            .filter(|((n, _), v)| *n == ns && selected(v, selector.as_ref()))
            .map(|(_, v)| v.clone())
            .collect();
        return json_response(
            StatusCode::OK,
            &json!({
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSliceList",
                "metadata": {"resourceVersion": s.rv.to_string()},
                "items": items
            }),
        );
    }
    let mut since: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut woken = changed.subscribe();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::convert::Infallible>>(64);
    tokio::spawn(async move {
        loop {
            woken.borrow_and_update();
            let lines: Vec<(u64, String)> = {
                let s = store.lock().unwrap();
                s.log
                    .iter()
                    .filter(|(rv, n, e)| {
                        *rv > since && *n == ns && selected(&e["object"], selector.as_ref())
                    })
                    .map(|(rv, _, e)| (*rv, format!("{e}\n")))
                    .collect()
            };
            for (rv, line) in lines {
                since = since.max(rv);
                if tx.send(Ok(Bytes::from(line))).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                r = woken.changed() => if r.is_err() { return },
                _ = tx.closed() => return,
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .unwrap()
}

async fn get_lease(
    State((store, _)): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    let s = store.lock().unwrap();
    match s.leases.get(&(ns, name.clone())) {
        Some(l) => json_response(StatusCode::OK, l),
        None => failure(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("leases.coordination.k8s.io \"{name}\" not found"),
        ),
    }
}

async fn create_lease(
    State((store, _)): State<Shared>,
    Path(ns): Path<String>,
    body: Bytes,
) -> Response {
    let mut lease: Value = serde_json::from_slice(&body).unwrap();
    let name = lease["metadata"]["name"].as_str().unwrap().to_string();
    let mut s = store.lock().unwrap();
    let key = (ns.clone(), name.clone());
    if s.leases.contains_key(&key) {
        return failure(
            StatusCode::CONFLICT,
            "AlreadyExists",
            &format!("leases.coordination.k8s.io \"{name}\" already exists"),
        );
    }
    s.rv += 1;
    lease["metadata"]["resourceVersion"] = json!(s.rv.to_string());
    lease["metadata"]["namespace"] = json!(ns);
    lease["apiVersion"] = json!("coordination.k8s.io/v1");
    lease["kind"] = json!("Lease");
    s.leases.insert(key, lease.clone());
    json_response(StatusCode::CREATED, &lease)
}

async fn replace_lease(
    State((store, _)): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let mut lease: Value = serde_json::from_slice(&body).unwrap();
    let mut s = store.lock().unwrap();
    let key = (ns.clone(), name.clone());
    let Some(stored) = s.leases.get(&key) else {
        return failure(StatusCode::NOT_FOUND, "NotFound", "not found");
    };
    if lease["metadata"]["resourceVersion"] != stored["metadata"]["resourceVersion"] {
        return failure(
            StatusCode::CONFLICT,
            "Conflict",
            &format!(
                "Operation cannot be fulfilled on leases.coordination.k8s.io \"{name}\": \
                 the object has been modified; please apply your changes to the latest version and try again"
            ),
        );
    }
    s.rv += 1;
    lease["metadata"]["resourceVersion"] = json!(s.rv.to_string());
    s.leases.insert(key, lease.clone());
    json_response(StatusCode::OK, &lease)
}
