// A transport::Link and a transport::Transport for the agent's services
// under test: the link records what is sent on it and lets the test play
// the other end (frames, payloads, its loss); the transport's dials are
// answered and its listener fed by the test. No sockets.
#pragma once

#include <gtest/gtest.h>

#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "dragon/common/messages.hpp"
#include "dragon/transport/link.hpp"

namespace dragon::agent {

/// A link that records what is sent on it; the test plays the other end.
class FakeLink final : public transport::Link {
public:
    explicit FakeLink(std::uint32_t node) : node_(node), name_("node " + std::to_string(node) + " (fake)") {}

    void start(FrameHandler on_frame, CloseHandler on_close, PayloadHandler on_payload) override {
        on_frame_ = std::move(on_frame);
        on_close_ = std::move(on_close);
        on_payload_ = std::move(on_payload);
        started = true;
    }
    transport::SendState send_frame(std::uint16_t type, std::string_view body) override {
        if (!open) return transport::SendState::closed;
        sent.push_back({type, std::string(body)});
        return transport::SendState::ok;
    }
    transport::SendState send_payload(std::uint16_t type, std::string_view header, std::span<const std::byte>,
                           DoneHandler done) override {
        if (!open) return transport::SendState::closed;
        sent.push_back({type, std::string(header)});
        if (done) done(ok());
        return transport::SendState::ok;
    }
    std::uint64_t bytes_read() const override { return bytes; }
    std::size_t queued_bytes() const override { return 0; }
    void set_on_drained(std::function<void()> fn) override { on_drained = std::move(fn); }
    void pause_reading() override { paused = true; }
    void resume_reading() override { paused = false; }
    bool reading_paused() const override { return paused; }
    void close_after_flush(std::function<void()> done) override {
        open = false;
        if (done) done();
    }
    void close() override { open = false; }
    bool is_open() const override { return open; }
    std::uint32_t remote_node_id() const override { return node_; }
    const std::string& name() const override { return name_; }

    /// The other end sends `m` (bytes count as heard, as on a socket).
    template <class M>
    void deliver(const M& m) {
        bytes += 100;
        on_frame_(wire::Frame{static_cast<std::uint16_t>(M::kType), wire::body_of(m)});
    }
    /// The other end sends `m` followed by a payload of `data` (in one piece).
    template <class M>
    Status deliver_payload(const M& m, std::string_view data) {
        bytes += data.size();
        auto sink = on_payload_(wire::Frame{static_cast<std::uint16_t>(M::kType), wire::body_of(m)}, data.size());
        if (!sink) return std::move(sink).error();
        if (!sink->destination.empty()) {
            std::memcpy(sink->destination.data(), data.data(), data.size());
        } else if (sink->on_bytes) {
            sink->on_bytes({reinterpret_cast<const std::byte*>(data.data()), data.size()});
        }
        if (sink->on_complete) sink->on_complete();
        return ok();
    }
    /// The other end went away.
    void drop(const char* why) {
        open = false;
        const Error e(Errc::closed, why);
        on_close_(&e);
    }
    /// The messages of type M sent on this link, decoded (and forgotten).
    template <class M>
    std::vector<M> take() {
        std::vector<M> out;
        std::erase_if(sent, [&](const wire::Frame& f) {
            if (f.type != static_cast<std::uint16_t>(M::kType)) return false;
            auto m = msg::decode_as<M>(f);
            EXPECT_TRUE(m) << m.error().message();
            if (m) out.push_back(std::move(*m));
            return true;
        });
        return out;
    }

    bool started = false;
    bool open = true;
    bool paused = false;
    std::uint64_t bytes = 0;
    std::vector<wire::Frame> sent;
    std::function<void()> on_drained;

protected:
    transport::SendState send_encoded(Encoder encode, const void* m) override {
        std::string out;
        encode(m, out);
        wire::FrameDecoder d;
        d.feed(out);
        auto f = d.next();
        EXPECT_TRUE(f && *f);
        return send_frame((*f)->type, (*f)->body);
    }

private:
    std::uint32_t node_;
    std::string name_;
    FrameHandler on_frame_;
    CloseHandler on_close_;
    PayloadHandler on_payload_;
};

/// A transport whose dials the test answers, and whose listener it feeds.
class FakeTransport final : public transport::Transport {
public:
    std::string_view name() const override { return "fake"; }
    Status listen(std::string_view address, int, LinkHandler on_link) override {
        listening_on = std::string(address);
        on_link_ = std::move(on_link);
        return ok();
    }
    transport::Endpoint local_endpoint() const override { return {"10.0.0.1", 4000}; }
    void stop_listening() override { listening = false; }
    void connect(const transport::Endpoint& at, std::uint32_t node, ConnectHandler done) override {
        dials.push_back({at, node, std::move(done)});
    }

    /// A node dials in.
    std::shared_ptr<FakeLink> accept(std::uint32_t node) {
        auto l = std::make_shared<FakeLink>(node);
        on_link_(l);
        return l;
    }
    /// The oldest pending dial succeeds (or fails with `fail`).
    std::shared_ptr<FakeLink> answer_dial(const char* fail = nullptr) {
        EXPECT_FALSE(dials.empty());
        Dial d = std::move(dials.front());
        dials.pop_front();
        if (fail != nullptr) {
            d.done(Error(Errc::closed, fail));
            return nullptr;
        }
        auto l = std::make_shared<FakeLink>(d.node);
        d.done(std::shared_ptr<transport::Link>(l));
        return l;
    }

    struct Dial {
        transport::Endpoint at;
        std::uint32_t node;
        ConnectHandler done;
    };
    std::deque<Dial> dials;
    std::string listening_on;
    bool listening = true;

private:
    LinkHandler on_link_;
};

}  // namespace dragon::agent
