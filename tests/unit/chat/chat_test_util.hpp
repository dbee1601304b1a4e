// Helpers shared by the chat unit tests: a recording chat::Client and loop pumping.
#pragma once

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "chat/chat.hpp"

namespace chat_test {

namespace chat = steerchat::chat;

struct Got {
    chat::EventType type;
    std::uint64_t serial, id;
    std::int64_t ts;
    std::string room, from, to, text, cid;
    bool has_cid;
    std::uint64_t seq;
};

struct FakeClient : chat::Client {
    std::vector<Got> got;
    void deliver(const chat::Event& e) override {
        got.push_back({e.type, e.serial, e.id, e.ts, std::string(e.room), std::string(e.from),
                       std::string(e.to), std::string(e.text), std::string(e.cid), e.has_cid,
                       e.seq});
    }
    std::vector<chat::Gap> gaps;
    void gap(const chat::Gap& g) override { gaps.push_back(g); }
    std::size_t count(chat::EventType t) const {
        std::size_t n = 0;
        for (const Got& g : got)
            n += g.type == t;
        return n;
    }
    std::vector<Got> of(chat::EventType t) const {
        std::vector<Got> v;
        for (const Got& g : got)
            if (g.type == t) v.push_back(g);
        return v;
    }
};

// A client plus its session.
struct User {
    FakeClient client;
    chat::Participant session;
    explicit User(chat::Hub& hub) : session(hub, client) {}
};

// Runs the loop until pred() or the timeout; returns pred().
template <class Pred>
bool pump_until(boost::asio::io_context& io, Pred pred,
                std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!pred()) {
        if (std::chrono::steady_clock::now() > deadline) return false;
        io.restart();
        io.run_for(std::chrono::milliseconds(1));
    }
    return true;
}

// Runs the loop for a while (to let anything that would arrive arrive).
inline void pump_for(boost::asio::io_context& io, std::chrono::milliseconds d) {
    io.restart();
    io.run_for(d);
}

}  // namespace chat_test
