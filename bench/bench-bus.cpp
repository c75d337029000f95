// Benchmark of lodged's bus API: cold activation (the first ListContainers while lodged is not
// running, started by the bus), warm ListContainers latency, and lodgectl start to running.
// Needs DBUS_SYSTEM_BUS_ADDRESS pointing at a bus that can activate io.lodge1 (bench/bus.sh
// sets one up). Prints numbers; asserts nothing.
//   bench-bus cold | warm [N] | busy [N] | probe INTERVAL_MS
// probe: one ListContainers every INTERVAL_MS, every call timed, until SIGTERM or SIGINT
// (bench/compare's responsiveness section runs it while lodged is busy).
#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <systemd/sd-bus.h>
#include <unistd.h>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

int list(sd_bus* bus) {
    sd_bus_error e = SD_BUS_ERROR_NULL;
    sd_bus_message* reply = nullptr;
    int r = sd_bus_call_method(bus, "io.lodge1", "/io/lodge1", "io.lodge1.Manager",
                               "ListContainers", &e, &reply, nullptr);
    if (r < 0)
        std::fprintf(stderr, "ListContainers: %s\n", e.message ? e.message : "failed");
    sd_bus_error_free(&e);
    sd_bus_message_unref(reply);
    return r;
}

volatile std::sig_atomic_t stop_now = 0;

void on_stop(int) {
    stop_now = 1;
}

double percentile(std::vector<double> v, double p) {
    std::sort(v.begin(), v.end());
    return v[std::min(v.size() - 1, static_cast<size_t>(p / 100.0 * v.size()))];
}

} // namespace

int main(int argc, char** argv) {
    std::string mode = argc > 1 ? argv[1] : "warm";
    int n = argc > 2 ? std::atoi(argv[2]) : 2000;
    sd_bus* bus = nullptr;
    if (sd_bus_open_system(&bus) < 0) {
        std::fprintf(stderr, "no system bus\n");
        return 1;
    }
    if (mode == "cold") {
        // One call; the caller made sure lodged is not running.
        auto t0 = Clock::now();
        if (list(bus) < 0)
            return 1;
        std::printf("%.3f\n", ms_since(t0));
    } else if (mode == "probe") {
        // The interval is the second argument; the connection is set up with the bus alone.
        int interval_ms = argc > 2 ? std::atoi(argv[2]) : 5;
        struct sigaction sa {};
        sa.sa_handler = on_stop;
        sigaction(SIGTERM, &sa, nullptr);
        sigaction(SIGINT, &sa, nullptr);
        sd_bus_message* reply = nullptr;
        sd_bus_call_method(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                           "org.freedesktop.DBus", "GetId", nullptr, &reply, nullptr);
        sd_bus_message_unref(reply);
        std::vector<double> t;
        int failed = 0;
        while (!stop_now) {
            auto t0 = Clock::now();
            if (list(bus) < 0)
                failed++;
            else
                t.push_back(ms_since(t0));
            if (interval_ms > 0)
                ::usleep(static_cast<useconds_t>(interval_ms) * 1000);
        }
        if (t.empty()) {
            std::printf("calls=0 failed=%d\n", failed);
            return 1;
        }
        std::printf("calls=%zu failed=%d p50=%.3f p99=%.3f max=%.3f ms\n", t.size(), failed,
                    percentile(t, 50), percentile(t, 99), percentile(t, 100));
    } else {
        std::vector<double> t;
        if (mode == "busy") {
            // Every call is timed, the first too: the bus connection is set up with the bus
            // itself, so a lodged that is busy right now is measured, not waited for.
            sd_bus_message* reply = nullptr;
            sd_bus_call_method(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                               "org.freedesktop.DBus", "GetId", nullptr, &reply, nullptr);
            sd_bus_message_unref(reply);
        } else {
            list(bus); // connection set up, lodged running
        }
        for (int i = 0; i < n; i++) {
            auto t0 = Clock::now();
            if (list(bus) < 0)
                return 1;
            t.push_back(ms_since(t0));
        }
        std::printf("calls=%d p50=%.3f p90=%.3f p99=%.3f max=%.3f ms\n", n, percentile(t, 50),
                    percentile(t, 90), percentile(t, 99), percentile(t, 100));
    }
    sd_bus_flush_close_unref(bus);
    return 0;
}
