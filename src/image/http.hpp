// HTTPS GETs for image downloads, through libcurl: the system trust store, or only a remote's
// own CA when it has one; https only (redirects too); a transfer that moves no byte for
// `stall_seconds` fails. Runs in a worker process (it blocks).
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace lodge::image {

struct HttpOptions {
    std::string ca_pem;          // non-empty: trust only this CA (PEM)
    unsigned stall_seconds = 60; // no data for this long: the transfer fails
};

// The body of `url`, at most `max_bytes`. 0 or -errno with `error` naming the URL.
int http_get(const std::string& url, const HttpOptions& options, size_t max_bytes,
             std::string& body, std::string& error);

// The same, but any HTTP status answers (0 with `status` set): for APIs whose error bodies
// say what went wrong (LXD's). Transport failures still fail.
int http_get_any_status(const std::string& url, const HttpOptions& options, size_t max_bytes,
                        std::string& body, long& status, std::string& error);

// Streams `url` to `sink` (which returns false to stop, with its own error set). `progress`
// gets the bytes received so far and the size the server announced (0 if none).
using HttpSink = std::function<bool(const char* data, size_t size)>;
using HttpProgress = std::function<void(uint64_t done, uint64_t total)>;
int http_download(const std::string& url, const HttpOptions& options, const HttpSink& sink,
                  const HttpProgress& progress, std::string& error);
// The same from byte `offset` on (an HTTP Range request when offset > 0): -ESPIPE when the
// server does not serve ranges (nothing reached `sink` then; start over from 0), -EIO for a
// transfer cut short, -ETIMEDOUT for a stalled one. `progress` counts from `offset`.
// `content_type`, when given, gets the response's Content-Type.
int http_download_from(const std::string& url, const HttpOptions& options, uint64_t offset,
                       const HttpSink& sink, const HttpProgress& progress, std::string& error,
                       std::string* content_type = nullptr);

// base + "/" + path without doubled slashes.
std::string url_join(const std::string& base, const std::string& path);

} // namespace lodge::image
