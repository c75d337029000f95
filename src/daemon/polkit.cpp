#include "daemon/polkit.hpp"
#include "common/log.hpp"

#include <cerrno>

namespace lodge::daemon {

int Polkit::verify(sd_bus_message* call, const char* action, const std::string& container,
                   sd_bus_error* error) {
    sd_bus_creds* creds = nullptr;
    if (int r = sd_bus_query_sender_creds(call, SD_BUS_CREDS_EUID, &creds); r < 0)
        return r;
    uid_t uid = 1;
    int r = sd_bus_creds_get_euid(creds, &uid);
    sd_bus_creds_unref(creds);
    if (r >= 0 && uid == 0)
        return 1;

    // A re-dispatched call: the answer is here.
    if (auto it = queries_.find(call); it != queries_.end() && it->second->done) {
        bool ok = it->second->authorized && it->second->action == action;
        std::string denial = it->second->denial;
        queries_.erase(it);
        if (ok)
            return 1;
        return sd_bus_error_set(error, SD_BUS_ERROR_ACCESS_DENIED, denial.c_str());
    }

    sd_bus* bus = sd_bus_message_get_bus(call);
    sd_bus_message* q = nullptr;
    r = sd_bus_message_new_method_call(
        bus, &q, "org.freedesktop.PolicyKit1", "/org/freedesktop/PolicyKit1/Authority",
        "org.freedesktop.PolicyKit1.Authority", "CheckAuthorization");
    if (r < 0)
        return r;
    MessagePtr query(q);
    const char* sender = sd_bus_message_get_sender(call);
    unsigned flags = sd_bus_message_get_allow_interactive_authorization(call) ? 1 : 0;
    r = sd_bus_message_append(q, "(sa{sv})s", "system-bus-name", 1, "name", "s",
                              sender ? sender : "", action);
    if (r >= 0)
        r = sd_bus_message_append(q, "a{ss}", 1, "container", container.c_str());
    if (r >= 0)
        r = sd_bus_message_append(q, "us", flags, "");
    if (r < 0)
        return r;

    auto entry = std::make_unique<Query>();
    entry->owner = this;
    entry->action = action;
    entry->call.reset(sd_bus_message_ref(call));
    sd_bus_slot* slot = nullptr;
    r = sd_bus_call_async(bus, &slot, q, on_reply, entry.get(), 0);
    if (r < 0)
        return sd_bus_error_set(error, SD_BUS_ERROR_ACCESS_DENIED,
                                "Only root may do this: polkit cannot be asked");
    entry->slot.reset(slot);
    queries_[call] = std::move(entry);
    return 0;
}

int Polkit::on_reply(sd_bus_message* reply, void* userdata, sd_bus_error*) {
    return guarded([&] {
        auto* q = static_cast<Query*>(userdata);
        q->done = true;
        const sd_bus_error* e = sd_bus_message_get_error(reply);
        if (e) {
            q->denial = sd_bus_error_has_name(e, SD_BUS_ERROR_SERVICE_UNKNOWN) ||
                                sd_bus_error_has_name(e, SD_BUS_ERROR_NAME_HAS_NO_OWNER)
                            ? "Only root may do this: polkit is not running"
                            : std::string("polkit failed: ") + (e->message ? e->message : e->name);
        } else {
            int authorized = 0, challenge = 0;
            if (sd_bus_message_enter_container(reply, 'r', "bba{ss}") >= 0 &&
                sd_bus_message_read(reply, "bb", &authorized, &challenge) >= 0) {
                q->authorized = authorized;
                if (!authorized)
                    q->denial = challenge ? "Interactive authentication required"
                                          : "Not authorized by polkit for " + q->action;
            } else {
                q->denial = "polkit sent an unreadable answer";
            }
        }
        // Run the parked method call again; verify() now finds the answer.
        sd_bus_message* call = q->call.get();
        sd_bus_message_rewind(call, 1);
        q->slot.reset();
        return sd_bus_enqueue_for_read(sd_bus_message_get_bus(call), call);
    });
}

} // namespace lodge::daemon
