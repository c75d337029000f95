#include "image/http.hpp"

#include "common/log.hpp"

#include <cerrno>
#include <curl/curl.h>
#include <memory>

namespace lodge::image {
namespace {

struct CurlFree {
    void operator()(CURL* c) const { curl_easy_cleanup(c); }
};

struct Transfer {
    Transfer(const HttpSink* s, const HttpProgress* p) : sink(s), progress(p) {}
    const HttpSink* sink = nullptr;
    const HttpProgress* progress = nullptr;
    uint64_t done = 0, last_report = 0;
    bool stopped = false;
    bool fail_on_error = true; // an HTTP error status fails the transfer (its body unread)
    long status = 0;           // after the transfer: the HTTP status
    std::string content_type;  // after the transfer: the Content-Type header, if any
};

size_t on_data(char* ptr, size_t size, size_t nmemb, void* userdata) {
    auto* t = static_cast<Transfer*>(userdata);
    size_t n = size * nmemb;
    // No exception may leave this C callback.
    try {
        if (!(*t->sink)(ptr, n)) {
            t->stopped = true;
            return 0;
        }
    } catch (...) {
        t->stopped = true;
        return 0;
    }
    t->done += n;
    return n;
}

int on_xfer(void* userdata, curl_off_t total, curl_off_t now, curl_off_t, curl_off_t) {
    auto* t = static_cast<Transfer*>(userdata);
    if (t->progress && *t->progress && now > 0 &&
        (static_cast<uint64_t>(now) >= t->last_report + (1 << 20) ||
         (total > 0 && now == total && static_cast<uint64_t>(now) != t->last_report))) {
        t->last_report = static_cast<uint64_t>(now);
        try {
            (*t->progress)(static_cast<uint64_t>(now),
                           total > 0 ? static_cast<uint64_t>(total) : 0);
        } catch (...) {
        }
    }
    return 0;
}

int run(const std::string& url, const HttpOptions& o, Transfer& t, std::string& error,
        uint64_t offset = 0) {
    static bool initialised = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
    if (!initialised) {
        error = "Cannot initialise libcurl";
        return -EIO;
    }
    std::unique_ptr<CURL, CurlFree> curl(curl_easy_init());
    if (!curl) {
        error = "Cannot initialise libcurl";
        return -ENOMEM;
    }
    CURL* c = curl.get();
    char curl_error[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(c, CURLOPT_URL, url.c_str());
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, curl_error);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 5L);
    curl_easy_setopt(c, CURLOPT_FAILONERROR, t.fail_on_error ? 1L : 0L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 30L);
    // Stalled: under 1 byte/s for stall_seconds.
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, static_cast<long>(o.stall_seconds));
    curl_easy_setopt(c, CURLOPT_USERAGENT, "lodge");
    struct curl_blob blob {};
    if (!o.ca_pem.empty()) {
        blob.data = const_cast<char*>(o.ca_pem.data());
        blob.len = o.ca_pem.size();
        blob.flags = CURL_BLOB_COPY;
        curl_easy_setopt(c, CURLOPT_CAINFO_BLOB, &blob);
    }
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &t);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_xfer);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, &t);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    // A resumed download: curl sends Range and fails with CURLE_RANGE_ERROR, before any byte
    // reaches the sink, when the server answers with the whole file.
    if (offset > 0)
        curl_easy_setopt(c, CURLOPT_RESUME_FROM_LARGE, static_cast<curl_off_t>(offset));
    CURLcode rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &t.status);
    if (const char* type = nullptr;
        curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &type) == CURLE_OK && type)
        t.content_type = type;
    if (rc == CURLE_OK) {
        if (t.progress && *t.progress)
            (*t.progress)(t.done, t.done);
        return 0;
    }
    if (rc == CURLE_RANGE_ERROR && t.done == 0) {
        error = "Cannot resume " + url + ": the server does not serve byte ranges";
        log_warning("%s", error.c_str());
        return -ESPIPE;
    }
    if (t.stopped && !error.empty())
        return -EINVAL;
    error = "Cannot download " + url + ": " + (curl_error[0] ? curl_error : curl_easy_strerror(rc));
    log_error("%s", error.c_str());
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
        return -ETIMEDOUT;
    case CURLE_HTTP_RETURNED_ERROR:
        return t.status == 404 ? -ENOENT : -EIO;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CONNECT_ERROR:
        return -EACCES;
    default:
        return -EIO;
    }
}

} // namespace

namespace {

Transfer body_transfer(const std::string& url, size_t max_bytes, std::string& body,
                       std::string& error, HttpSink& sink, HttpProgress& none) {
    body.clear();
    sink = [&url, max_bytes, &body, &error](const char* data, size_t n) {
        if (body.size() + n > max_bytes) {
            error = url + " is larger than " + std::to_string(max_bytes) + " bytes";
            return false;
        }
        body.append(data, n);
        return true;
    };
    return Transfer{&sink, &none};
}

} // namespace

int http_get_any_status(const std::string& url, const HttpOptions& options, size_t max_bytes,
                        std::string& body, long& status, std::string& error) {
    HttpSink sink;
    HttpProgress none;
    Transfer t = body_transfer(url, max_bytes, body, error, sink, none);
    t.fail_on_error = false;
    int r = run(url, options, t, error);
    status = t.status;
    return r;
}

int http_get(const std::string& url, const HttpOptions& options, size_t max_bytes,
             std::string& body, std::string& error) {
    HttpSink sink;
    HttpProgress none;
    Transfer t = body_transfer(url, max_bytes, body, error, sink, none);
    return run(url, options, t, error);
}

int http_download(const std::string& url, const HttpOptions& options, const HttpSink& sink,
                  const HttpProgress& progress, std::string& error) {
    Transfer t{&sink, &progress};
    return run(url, options, t, error);
}

int http_download_from(const std::string& url, const HttpOptions& options, uint64_t offset,
                       const HttpSink& sink, const HttpProgress& progress, std::string& error,
                       std::string* content_type) {
    HttpProgress shifted = [&](uint64_t done, uint64_t total) {
        if (progress)
            progress(offset + done, total ? offset + total : 0);
    };
    Transfer t{&sink, &shifted};
    int r = run(url, options, t, error, offset);
    if (content_type)
        *content_type = t.content_type;
    return r;
}

std::string url_join(const std::string& base, const std::string& path) {
    std::string b = base;
    while (!b.empty() && b.back() == '/')
        b.pop_back();
    size_t i = 0;
    while (i < path.size() && path[i] == '/')
        i++;
    return b + "/" + path.substr(i);
}

} // namespace lodge::image
