// The one place where command-line options become a worker's configuration: what the master
// hands to app::run_worker for a slot.
#pragma once

#include "app/worker_app.hpp"
#include "master/options.hpp"

namespace steerchat::master {

// The options part of a worker's context (slot, listener, ring and chat state are the
// supervisor's to fill).
app::WorkerContext worker_context(const Options& opts);

}  // namespace steerchat::master
