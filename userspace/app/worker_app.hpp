// The worker application: what one worker process serves, composed on a net::Worker.
//
//   net::Worker (HTTP edge, /healthz, /metrics, /echo)
//     + chat::Hub on this slot (the chat core, reading the other workers' ring logs)
//     + native::Service at /ws (the native JSON chat)
//     + Socket.IO (sio::Server with the chat's namespaces) at --socketio-path, or, with
//       --protocol-test, the public protocol suites' Engine.IO echo and Socket.IO servers
//     + /metrics sources of each part
//
// The master forks, pins, closes fds and calls run_worker(const WorkerLaunch&) of launch.hpp;
// it knows nothing else of the parts. Tests and fuzzers build the same composition in process (no
// fork, no listener): a net::Worker, then a WorkerApp on it, and drive the worker's io_context.
//
// Threading: the worker's event loop thread.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "app/launch.hpp"
#include "chat/chat.hpp"
#include "chat/shared_state.hpp"
#include "eio/server.hpp"
#include "net/worker.hpp"
#include "ring/ring.hpp"
#include "sio/server.hpp"

namespace steerchat::app {

// Options of the application parts (the HTTP edge's are in net::WorkerConfig).
struct AppOptions {
    bool encode_once = true;   // false: encode every delivery separately (benchmark baseline)
    chat::Limits chat_limits;  // rate limits and rooms per user (both protocols)
    eio::Options engine;       // Engine.IO: path, heartbeats, max payload, v3, CORS, origins
    sio::Options socketio;     // Socket.IO: connect timeout
    std::vector<std::string> sio_namespaces;  // served besides "/"
    bool protocol_test = false;               // the public protocol test suites' server
    bool status_page = true;                  // GET /status and /status.json (web/)
};

// Everything one worker needs: what run_worker(const WorkerLaunch&) builds from the master's
// hand-over (launch.hpp), or a test fills itself.
struct WorkerContext {
    unsigned slot = 0;
    unsigned nslots = 1;
    int listen_fd = -1;                  // this slot's listener (plain HTTP), owned by the worker
    int tls_listen_fd = -1;              // this slot's TLS listener, owned by the worker
    ring::Region* ring = nullptr;        // the shared-memory logs (inherited mapping)
    chat::SharedState* chat = nullptr;   // the cluster directory (inherited mapping)
    metrics::Region* metrics = nullptr;  // the host's metrics (inherited mapping); nullptr: private
    net::WorkerConfig net;               // HTTP edge options (slot, nslots, listen_fd: above)
    AppOptions app;
    // Written once, from inside the event loop after the accept loop started: the slot and pid
    // (two int32) that tell the master this worker serves (its READY=1 to systemd waits for every
    // slot); then closed. -1: none.
    int ready_fd = -1;
    // The config channel (launch.hpp, ConfigUpdate): read from the event loop, each update
    // applied to the parts (apply_update). -1: none.
    int config_fd = -1;
    WorkerOptions options;  // what the parts were built from (an update that equals it is a no-op)
    ReloadCounts reloads;   // shown on /metrics (steerchat_config_reloads_total)
};

// The options part of a worker's context: the one place where command-line options become the
// parts' configurations (slot, listener, ring and chat state are the caller's to fill).
WorkerContext worker_context(const WorkerOptions& options, unsigned nslots);

// The HTTP edge's configuration for `ctx`: ctx.net with the slot and listener, and room for
// Engine.IO's bodies (it enforces its own payload limit, with its own error).
net::WorkerConfig worker_config(const WorkerContext& ctx);

// The application parts of one worker, registered on `worker` (routes, stop hooks, metrics).
// Construct after the worker; destroy it (after draining the worker's connections) before the
// worker. `ring` and `chat` must outlive it.
class WorkerApp {
  public:
    WorkerApp(net::Worker& worker, ring::Region& ring, chat::SharedState& chat,
              const AppOptions& options);
    ~WorkerApp();
    WorkerApp(const WorkerApp&) = delete;
    WorkerApp& operator=(const WorkerApp&) = delete;

    chat::Hub& hub() noexcept;
    // A reload: the chat limits (for every user at once: the next request counts against the
    // new rate), Engine.IO and Socket.IO options (eio::Server::update_options); namespaces,
    // encode-once and the protocol-test mode stay as they were built.
    void update(const AppOptions& options);

  private:
    struct Parts;
    std::unique_ptr<Parts> parts_;
};

// Applies a configuration update (the master's reload) to a running worker and its application:
// log level and format, Worker::update_limits, WorkerApp::update. What cannot change while
// running (the master names it and keeps the old value) is ignored here.
void apply_update(net::Worker& worker, WorkerApp& app, const WorkerOptions& options,
                  unsigned nslots);

// Builds the worker and its application, serves until SIGTERM/SIGINT and drains, then ends the
// process with _exit (status 0; 1 if the worker could not start, with the reason logged). It does
// not unwind: connections still referenced by handlers inside the io_context when the drain timed
// out would otherwise outlive the chat hub they point to.
[[noreturn]] void run_worker(const WorkerContext& ctx);

}  // namespace steerchat::app
