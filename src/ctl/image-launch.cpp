// lodgectl's verbs between images and containers (lodge-images(7)): `launch`, `create NAME
// IMAGE` and `publish`.
#include "ctl/image-common.hpp"
#include "ctl/image.hpp"

#include "common/validate.hpp"

#include <cerrno>
#include <cstdio>
#include <nlohmann/json.hpp>

namespace lodge::ctl {
namespace {

using namespace images;

int create_quietly(const Options& a, sd_bus* bus, const std::string& name, const std::string& ref) {
    if (auto e = check_container_name(name); !e.empty())
        return fail(e);
    MessagePtr call = new_manager_call(bus, "CreateContainerFromImage");
    if (!call)
        return 1;
    // -c KEY=VALUE..., and --privileged as its key.
    std::vector<std::string> config = a.config;
    if (a.values.count("privileged"))
        config.push_back("security.privileged=true");
    std::string bad;
    int r = sd_bus_message_append(call.get(), "s", name.c_str());
    if (r >= 0 && (r = append_map(call.get(), config, bad)) == -EINVAL)
        return fail("Invalid config \"" + bad + "\": expected KEY=VALUE");
    if (r >= 0)
        r = sd_bus_message_append(call.get(), "s", local_ref(ref).c_str());
    BusError err;
    MessagePtr reply;
    if (r >= 0)
        r = call_showing_downloads(a, bus, call.get(), err, reply);
    return r < 0 ? bus_fail(err, r) : 0;
}

} // namespace

int create_from_image(const Options& a, sd_bus* bus, const std::string& name,
                      const std::string& ref) {
    if (int r = create_quietly(a, bus, name, ref); r != 0 || (r = join_network(a, bus, name)) != 0)
        return r;
    if (a.json)
        std::printf("%s\n", nlohmann::json{{"name", name}, {"created", true}}.dump().c_str());
    else if (!a.quiet)
        std::printf("Created container %s\n", name.c_str());
    return 0;
}

int verb_launch(const Options& a, sd_bus* bus) {
    if (a.args.size() != 3)
        return fail("Usage: lodgectl launch [REMOTE:]IMAGE NAME [-c KEY=VALUE]... [--network NET] "
                    "[--privileged]");
    const std::string &ref = a.args[1], &name = a.args[2];
    if (int r = create_quietly(a, bus, name, ref); r != 0 || (r = join_network(a, bus, name)) != 0)
        return r;
    BusError err;
    int r = call_manager(bus, err, nullptr, "StartContainer", "s", name.c_str());
    if (r < 0)
        return bus_fail(err, r);
    if (a.json)
        std::printf(
            "%s\n",
            nlohmann::json{{"name", name}, {"created", true}, {"started", true}}.dump().c_str());
    else if (!a.quiet)
        std::printf("Launched container %s\n", name.c_str());
    return 0;
}

int verb_publish(const Options& a, sd_bus* bus) {
    if (a.args.size() != 2)
        return fail("Usage: lodgectl publish NAME [--alias ALIAS] [--compression "
                    "gzip|xz|zstd|none]");
    MessagePtr call = new_call_with_aliases(bus, "PublishContainer", a.args[1], a);
    if (!call)
        return 1;
    auto comp = a.values.find("compression");
    int r =
        sd_bus_message_append(call.get(), "s", comp == a.values.end() ? "" : comp->second.c_str());
    BusError err;
    sd_bus_message* answer = nullptr;
    if (r >= 0)
        r = sd_bus_call(bus, call.get(), 0, &err.e, &answer);
    MessagePtr reply(answer);
    if (r < 0)
        return bus_fail(err, r);
    return print_fingerprint(a, reply.get(), "Container published");
}

} // namespace lodge::ctl
