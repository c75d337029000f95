// The image store on the bus (lodge-images(7)): io.lodge1.Manager's image methods, on a
// vtable of their own on /io/lodge1. Reading the store is open to every caller (images hold no
// secrets of lodge's); changing it, exporting an image and creating from one need
// io.lodge1.manage. Copying files in and unpacking them run in Operation workers.
#pragma once

#include "daemon/manager.hpp"
#include "image/store.hpp"

#include <functional>
#include <map>
#include <string>
#include <vector>

namespace lodge::daemon {

// One image entry on the bus: fingerprint, type, architecture, size, uploaded and last-used
// times (µs, CLOCK_REALTIME), properties, aliases, cached, source.
inline constexpr const char* image_entry_signature = "(sssttta{ss}asbs)";

class ImageService {
public:
    explicit ImageService(Manager& manager) : manager_(manager) {}
    // Registers the vtable; removes what an interrupted import or delete left (in workers).
    int start(sd_bus* bus);

    // Creates container `request.config.name` from the local image `ref` (alias, fingerprint
    // or prefix): `done` as Manager::create's.
    Result<> create_from(const std::string& ref, CreateRequest request, Done done);

    // Makes `ref` local: an image of the store ("alias", fingerprint, "local:alias"), or
    // "remote:alias", downloaded once (concurrent callers share one download; an image this
    // remote alias gave before is used without asking the remote again). `then` gets the
    // fingerprint, or r < 0 and the error.
    using Fetched =
        std::function<void(int r, const std::string& fingerprint, const std::string& error)>;
    // `refresh`: asks the remote again even when the store holds an image of that name.
    void ensure_local(const std::string& ref, bool cached, Fetched then, bool refresh = false);

    // Downloads under way, by "remote:alias".
    struct Download {
        std::string stage = "index";
        uint64_t done = 0, total = 0, rate = 0; // bytes, bytes/s
        uint64_t started_usec = 0, stage_started_usec = 0, last_signal_usec = 0;
        std::vector<Fetched> waiters;
    };
    const std::map<std::string, Download>& downloads() const { return downloads_; }

    Manager& manager() { return manager_; }
    const image::Store& store() const { return store_; }

    // Cached images (fetched for a launch) unused for this long are removed:
    // LODGE_IMAGE_CACHE_EXPIRY seconds, default 10 days, 0 never.
    static uint64_t cache_expiry_usec();
    // Removes the expired cached images no create is using now.
    void expire();

private:
    static constexpr uint64_t expiry_check_usec = 3600ULL * 1000000;
    static int on_expiry_timer(sd_event_source* s, uint64_t usec, void* userdata);
    void create_local(const std::string& fp, CreateRequest request, Done done);
    void progress(const std::string& key, uint64_t done, uint64_t total, const std::string& stage);
    void downloaded(const std::string& key, bool cached, const OperationResult& res,
                    const std::string& work_dir);

    Manager& manager_;
    image::Store store_;
    SlotPtr slot_;
    std::map<std::string, Download> downloads_;
    std::map<std::string, int> in_use_; // fingerprint -> creates unpacking it now
    SourcePtr expiry_timer_;
};

} // namespace lodge::daemon
