// Reload (SIGHUP, `systemctl reload steerchat`): which settings a running server takes from a
// re-read configuration, and which need a restart. The master re-parses its original command
// line and the --config file it names (parse_options, exactly as at start), then plan_reload
// compares the running options with the re-read ones, setting by setting.
//
// Live (applied): the limits and timers of the HTTP edge, WebSocket, Engine.IO, Socket.IO and
// chat; allowed origins and CORS origins; the log level and format; the master's restart policy.
// Everything else (port, bind, workers, steering, seed, ring size, user, group, seccomp, paths,
// namespaces, ...) needs a restart: a change is named and the running value kept.
//
// Threading: the master's thread.
#pragma once

#include <string>
#include <vector>

#include "master/options.hpp"

namespace steerchat::master {

struct ReloadPlan {
    Options next;                      // the running options with the live changes applied
    std::vector<std::string> changed;  // keys (long option names) applied
    struct Kept {
        std::string key;
        std::string running;  // the value kept
        std::string wanted;   // the value the configuration asks for
    };
    std::vector<Kept> kept;  // changes that need a restart (not applied)
};

ReloadPlan plan_reload(const Options& running, const Options& reread);

// Every setting the planner knows (long option names), and whether it changes live. Every key
// of the command line's settings (setting_keys() in options.hpp) is one of them (a unit test
// checks it).
struct ReloadKey {
    std::string key;
    bool live;
};
std::vector<ReloadKey> reload_keys();

}  // namespace steerchat::master
