// What the image faces share (image-dbus.cpp: the store; image-remote-dbus.cpp: remotes and
// downloads; image-launch-dbus.cpp: creating from an image and publishing): the store's typed
// errors, an image's bus entry, the end of an import worker, and the handlers image_vtable
// (image-dbus.cpp) lists.
#pragma once

#include "daemon/bus-method.hpp"
#include "daemon/image-dbus.hpp"
#include "image/http.hpp"
#include "image/remotes.hpp"

#include <functional>
#include <string>
#include <vector>

namespace lodge::daemon::image_bus {

inline constexpr const char* no_such_image = "io.lodge1.NoSuchImage";
inline constexpr const char* image_exists = "io.lodge1.ImageExists";

inline ImageService& service(void* ud) {
    return *static_cast<ImageService*>(ud);
}

uint64_t now_usec();

// The store's failures: a missing image or alias, an existing one, a bad name.
Error image_error(int r, const std::string& msg);
int set_image_error(sd_bus_error* e, int r, const std::string& msg);
void reply_image_error(const HeldCall& call, int r, const std::string& msg);
// An operation that could not be queued: Busy when lodged's work queue is full.
int refuse_operation(sd_bus_error* e, int r, const std::string& msg);
// InvalidConfig for the first bad alias name; 0 when all are good.
int check_aliases(const std::vector<std::string>& aliases, sd_bus_error* e);

// Runs `body` for a caller allowed io.lodge1.manage (no container named).
template <typename Body>
int when_managing(sd_bus_message* m, void* ud, sd_bus_error* e, Body&& body) {
    return guarded([&] {
        return if_allowed(service(ud).manager().polkit().verify(m, actions::manage, "", e), body);
    });
}

// Removes `path` in a worker (a big image takes a while to unlink), then calls `then`.
void discard(Manager& manager, const std::string& path, std::function<void()> then);

// Makes an image of the store in a worker: `make(w, work_dir, info, why)` fills a fresh work
// directory there; back on the loop `vet(info, why)`, when given, may still refuse it (publish:
// the container changed meanwhile), and finish_import() commits it with `aliases` and answers
// `m`. `op` brings what, fds and limits. Returns the handler's value.
using MakeImage = std::function<int(Worker& w, const std::string& work_dir, image::ImageInfo& info,
                                    std::string& why)>;
using VetImage = std::function<int(image::ImageInfo& info, std::string& why)>;
int start_image_worker(sd_bus_message* m, ImageService& svc, sd_bus_error* e, OperationSpec op,
                       const std::vector<std::string>& aliases, MakeImage make, VetImage vet);

// The image's files, read-only: the image (or metadata) and, for a split image, the rootfs.
int open_image_files(const std::string& fp, const image::ImageInfo& info, std::vector<Fd>& files,
                     std::string& why);

// image-remote-dbus.cpp
unsigned stall_seconds();
// How lodged's downloads from `remote` talk HTTPS: its CA, the stall timeout.
image::HttpOptions http_options(const image::Remote& remote);
int method_list_remotes(sd_bus_message* m, void* ud, sd_bus_error* e);
int method_add_remote(sd_bus_message* m, void* ud, sd_bus_error* e);
int method_remove_remote(sd_bus_message* m, void* ud, sd_bus_error* e);
int method_rename_remote(sd_bus_message* m, void* ud, sd_bus_error* e);
int method_list_remote_images(sd_bus_message* m, void* ud, sd_bus_error* e);
int method_copy_image(sd_bus_message* m, void* ud, sd_bus_error* e);
int property_get_downloads(sd_bus* bus, const char* path, const char* iface, const char* property,
                           sd_bus_message* reply, void* ud, sd_bus_error* e);

// image-launch-dbus.cpp
int method_create_from_image(sd_bus_message* m, void* ud, sd_bus_error* e);
int method_publish_container(sd_bus_message* m, void* ud, sd_bus_error* e);

} // namespace lodge::daemon::image_bus
