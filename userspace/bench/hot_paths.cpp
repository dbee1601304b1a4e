// steerchat-microbench: Google Benchmark of the hot paths, in one process, no network.
//
//   encode    ws::SharedFrame::text of 16 B / 1 KiB / 64 KiB (one allocation + header + copy:
//             what a broadcast pays once per event per worker)
//   parse     ws::FrameParser over masked client text frames (unmask + UTF-8 validation +
//             reassembly buffer), the whole buffer at once and in 1500-byte pieces
//   utf8      text::is_valid_utf8 against the reference decoder of tests/support, ASCII and mixed
//             text (1-4 byte sequences), 1 KiB and 64 KiB
//   ring      ring::Writer::publish + ring::Reader::poll within one process (one record at a
//             time and in batches of 64), 64-byte payloads
//   steer     jhash_1word of a client address + the Maglev bucket lookup the BPF program does,
//             and predict_slot (bucket + live check); building the table for reference
//
//   steerchat-microbench [--benchmark_filter=REGEX] [--benchmark_format=json] ...
#include <benchmark/benchmark.h>
#include <netinet/in.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include "ring/ring.hpp"
#include "steer/jhash.hpp"
#include "steer/maglev.hpp"
#include "support/utf8_reference.hpp"
#include "text/utf8.hpp"
#include "ws/frame.hpp"

namespace {

namespace ws = steerchat::ws;
namespace text = steerchat::text;
namespace ring = steerchat::ring;
namespace steer = steerchat::steer;

// Printable ASCII of `size` bytes.
std::string ascii_text(std::size_t size) {
    std::string s(size, ' ');
    for (std::size_t i = 0; i < size; ++i)
        s[i] = static_cast<char>('a' + i % 26);
    return s;
}

// Valid UTF-8 of exactly `size` bytes: ASCII words with 2-, 3- and 4-byte sequences between them
// (about a third of the bytes are non-ASCII), padded with ASCII.
std::string mixed_text(std::size_t size) {
    static const char* const kPieces[] = {"hello ",           "\xC3\xA9t\xC3\xA9 ",
                                          "\xE2\x9C\x93 ok ", "\xF0\x9F\x98\x80 ",
                                          "na\xC3\xAFve ",    "\xE6\x97\xA5\xE6\x9C\xAC "};
    std::string s;
    for (std::size_t i = 0;; ++i) {
        const std::string_view p = kPieces[i % std::size(kPieces)];
        if (s.size() + p.size() > size) break;
        s += p;
    }
    s.append(size - s.size(), 'x');
    return s;
}

// ---------------------------------------------------------------------------------------------
// Frame encode

void BM_EncodeSharedFrameText(benchmark::State& state) {
    const std::string payload = ascii_text(static_cast<std::size_t>(state.range(0)));
    for (auto _ : state) {
        ws::SharedFrame f = ws::SharedFrame::text(payload);
        benchmark::DoNotOptimize(f.data());
    }
    state.SetBytesProcessed(state.iterations() * state.range(0));
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_EncodeSharedFrameText)->Arg(16)->Arg(1024)->Arg(64 * 1024);

// ---------------------------------------------------------------------------------------------
// Frame parse

// Masked client text frames of `size` bytes each, about 256 KiB in all (at least one frame).
std::vector<std::uint8_t> masked_frames(std::size_t size) {
    const std::string payload = ascii_text(size);
    const std::size_t count = std::max<std::size_t>(1, (256 * 1024) / (size + 14));
    std::vector<std::uint8_t> out;
    for (std::size_t i = 0; i < count; ++i) {
        const ws::MaskKey key{static_cast<std::uint8_t>(i), 0x5A, 0xC3, 0x17};
        ws::encode_client_frame(out, ws::Opcode::text, ws::as_bytes(payload), key);
    }
    return out;
}

// range(0): payload bytes per frame; range(1): bytes per feed (0: the whole buffer).
void BM_ParseMaskedFrames(benchmark::State& state) {
    const auto size = static_cast<std::size_t>(state.range(0));
    const auto piece = static_cast<std::size_t>(state.range(1));
    const std::vector<std::uint8_t> input = masked_frames(size);
    ws::FrameParser parser;
    std::size_t messages = 0;
    for (auto _ : state) {
        ws::ByteView rest(input);
        while (!rest.empty()) {
            const std::size_t n = piece ? std::min(piece, rest.size()) : rest.size();
            const bool ok = parser.feed_all(rest.first(n), [&](const ws::Event& ev) {
                benchmark::DoNotOptimize(ev.payload.data());
                ++messages;
            });
            if (!ok) {
                state.SkipWithError("parser error");
                return;
            }
            rest = rest.subspan(n);
        }
    }
    state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(input.size()));
    state.SetItemsProcessed(static_cast<std::int64_t>(messages));
}
BENCHMARK(BM_ParseMaskedFrames)
    ->Args({16, 0})
    ->Args({1024, 0})
    ->Args({64 * 1024, 0})
    ->Args({16, 1500})
    ->Args({1024, 1500})
    ->Args({64 * 1024, 1500});

// ---------------------------------------------------------------------------------------------
// UTF-8

// range(0): 0 ASCII, 1 mixed; range(1): bytes.
std::string utf8_input(const benchmark::State& state) {
    const auto size = static_cast<std::size_t>(state.range(1));
    return state.range(0) == 0 ? ascii_text(size) : mixed_text(size);
}

void BM_Utf8Validator(benchmark::State& state) {
    const std::string s = utf8_input(state);
    state.SetLabel(state.range(0) == 0 ? "ascii" : "mixed");
    for (auto _ : state) {
        bool ok = text::is_valid_utf8(s);
        benchmark::DoNotOptimize(ok);
        if (!ok) state.SkipWithError("not valid");
    }
    state.SetBytesProcessed(state.iterations() * state.range(1));
}
BENCHMARK(BM_Utf8Validator)->ArgsProduct({{0, 1}, {1024, 64 * 1024}});

void BM_Utf8Reference(benchmark::State& state) {
    const std::string s = utf8_input(state);
    state.SetLabel(state.range(0) == 0 ? "ascii" : "mixed");
    for (auto _ : state) {
        bool ok = steerchat::test_support::reference_utf8(
            reinterpret_cast<const std::uint8_t*>(s.data()), s.size());
        benchmark::DoNotOptimize(ok);
        if (!ok) state.SkipWithError("not valid");
    }
    state.SetBytesProcessed(state.iterations() * state.range(1));
}
BENCHMARK(BM_Utf8Reference)->ArgsProduct({{0, 1}, {1024, 64 * 1024}});

// ---------------------------------------------------------------------------------------------
// Ring

// range(0): records published before each poll.
void BM_RingPublishConsume(benchmark::State& state) {
    const auto batch = static_cast<std::size_t>(state.range(0));
    ring::Region region = ring::Region::create(2, std::size_t{1} << 20);
    ring::Writer writer(region, 0);
    ring::Reader reader(region, 1);
    std::array<std::byte, 64> payload{};
    std::uint64_t seen = 0, losses = 0;
    for (auto _ : state) {
        for (std::size_t i = 0; i < batch; ++i)
            writer.publish(1, payload);
        reader.poll(
            [&](const ring::Record& r) {
                benchmark::DoNotOptimize(r.payload.data());
                ++seen;
            },
            [&](const ring::Loss&) { ++losses; });
    }
    if (losses || seen != state.iterations() * batch) state.SkipWithError("records lost");
    state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(batch));
    state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(batch * payload.size()));
}
BENCHMARK(BM_RingPublishConsume)->Arg(1)->Arg(64);

// ---------------------------------------------------------------------------------------------
// Steering: jhash + Maglev

std::vector<std::uint32_t> live_slots(std::uint32_t n) {
    std::vector<std::uint32_t> v(n);
    std::iota(v.begin(), v.end(), 0u);
    return v;
}

// range(0): slots. One lookup per distinct client address (127.1.0.0/16 walked in order).
void BM_JhashMaglevLookup(benchmark::State& state) {
    const std::vector<std::uint32_t> table =
        steer::maglev_table(live_slots(static_cast<std::uint32_t>(state.range(0))));
    const std::uint32_t seed = 0x12345678;
    std::uint32_t host = (127u << 24) | (1u << 16);
    for (auto _ : state) {
        in_addr a{};
        a.s_addr = htonl(host++);
        const std::uint32_t slot = table[steer::bucket_of(steer::hash_client(a, seed))];
        benchmark::DoNotOptimize(slot);
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_JhashMaglevLookup)->Arg(2)->Arg(64);

// predict_slot: the same with the live check (and the walk to the next live slot).
void BM_JhashPredictSlot(benchmark::State& state) {
    const auto n = static_cast<std::uint32_t>(state.range(0));
    const std::vector<std::uint32_t> table = steer::maglev_table(live_slots(n));
    std::unique_ptr<bool[]> live(new bool[n]);
    for (std::uint32_t i = 0; i < n; ++i)
        live[i] = i != 0;  // slot 0 drained: its buckets fall through to slot 1
    const std::uint32_t seed = 0x12345678;
    std::uint32_t host = (127u << 24) | (1u << 16);
    for (auto _ : state) {
        in_addr a{};
        a.s_addr = htonl(host++);
        const int slot = steer::predict_slot(steer::hash_client(a, seed), table,
                                             std::span<const bool>(live.get(), n));
        benchmark::DoNotOptimize(slot);
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_JhashPredictSlot)->Arg(2)->Arg(64);

// Not per packet: what the master pays to (re)build the table on start or drain.
void BM_MaglevBuild(benchmark::State& state) {
    const std::vector<std::uint32_t> live = live_slots(static_cast<std::uint32_t>(state.range(0)));
    for (auto _ : state) {
        std::vector<std::uint32_t> t = steer::maglev_table(live);
        benchmark::DoNotOptimize(t.data());
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_MaglevBuild)->Arg(2)->Arg(64)->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
