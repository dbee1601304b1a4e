#include "sio/protocol_test.hpp"

#include <chrono>
#include <memory>

#include <boost/asio/steady_timer.hpp>

#include "net/worker.hpp"

namespace steerchat::sio {

namespace {

struct Echo final : eio::SessionHandler {
    void on_message(eio::Session& session, std::string_view data, bool binary) override {
        session.send(data, binary);
    }
};

struct SuiteHandler final : EventHandler {
    // The suites register their listener for the "auth" event only after the CONNECT reply has
    // been handled: a client that reads both from one TCP segment drops the second. So the
    // reply and "auth" go out in separate writes, a moment apart (the suites' limitation, not
    // the protocol's: a real client handles any batching).
    // The timer's handler holds the socket by weak_ptr: it may run after the socket has gone
    // (already queued when the socket was destroyed) or left its namespace.
    SuiteHandler(Socket& socket, boost::json::object auth)
        : auth_timer_(socket.engine().server().worker().io()) {
        auth_timer_.expires_after(std::chrono::milliseconds(20));
        auth_timer_.async_wait([weak = socket.weak_from_this(),
                                auth = std::move(auth)](const boost::system::error_code& ec) {
            const auto s = weak.lock();
            if (!ec && s && s->connected()) s->emit("auth", auth);
        });
    }

    void on_event(Socket& socket, const boost::json::array& args,
                  std::span<const std::string> attachments,
                  std::optional<std::uint64_t> ack) override {
        if (args.empty() || !args[0].is_string()) return;
        const auto& name = args[0].as_string();
        if (name == "message") {
            boost::json::array back = args;
            back[0] = "message-back";
            socket.emit(back, attachments);
        } else if (name == "message-with-ack" && ack) {
            boost::json::array rest(args.begin() + 1, args.end());
            socket.ack(*ack, rest, attachments);
        }
    }

    boost::asio::steady_timer auth_timer_;
};

eio::Options with_path(eio::Options o, const char* path) {
    o.path = path;
    return o;
}

std::vector<Namespace> suite_namespaces() {
    auto on_connect = [](Socket& s, const boost::json::object& auth) {
        return std::make_unique<SuiteHandler>(s, auth);
    };
    return {{"/", on_connect}, {"/custom", on_connect}};
}

}  // namespace

ProtocolTest::ProtocolTest(net::Worker& worker, const eio::Options& engine_options,
                           const Options& sio_options)
    : echo_(worker, with_path(engine_options, "/engine.io/"),
            [](eio::Session&) { return std::make_unique<Echo>(); }),
      sio_(worker, with_path(engine_options, "/socket.io/"), sio_options, suite_namespaces()) {}

}  // namespace steerchat::sio
