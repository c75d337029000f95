// lodgectl: the admin CLI, machinectl-style. It talks to lodged over D-Bus only (CONTRACT §8):
// sources are opened here and passed as file descriptors; lodged never opens a caller's path.
// This file holds the options and the verb table; the verbs live one group to a file
// (verbs.hpp).
#include "ctl/bus.hpp"
#include "ctl/cluster.hpp"
#include "ctl/network.hpp"
#include "ctl/remote.hpp"
#include "ctl/verbs.hpp"

#include <cstdint>
#include <cstdio>
#include <string>
#include <unistd.h>
#include <vector>

namespace lodge::ctl {
namespace {

struct Verb {
    const char* name;
    size_t min_args, max_args; // arguments after the verb (options excluded)
    const char* usage;         // after "lodgectl "
    const char* summary;
    VerbHandler run;
};
constexpr size_t any = SIZE_MAX;

const std::vector<Verb>& verbs() {
    static const std::vector<Verb> table = {
        {"list", 0, 0, "list [--json] [--no-legend] [-q]",
         "List containers: state, leader and addresses (-q: names only).", verb_list},
        {"status", 1, any, "status NAME... [--json]", "Show a container's state.",
         verb_status_or_show},
        {"show", 1, any, "show NAME... [--json]", "Show a container's properties.",
         verb_status_or_show},
        {"create", 1, 3,
         "create NAME [DIRECTORY | TARBALL | METADATA ROOTFS | [REMOTE:]IMAGE] [-c KEY=VALUE]... "
         "[--network NET]",
         "Create a container from the built-in image, a directory, a tarball, an LXD image file "
         "or an image of the store.",
         verb_create},
        {"launch", 2, 2,
         "launch [REMOTE:]IMAGE NAME [-c KEY=VALUE]... [--network NET] [--privileged]",
         "Create a container from an image and start it.", verb_launch},
        {"image", 1, any,
         "image list [REMOTE:] [FILTER] | info IMAGE | delete IMAGE... | alias create ALIAS IMAGE "
         "| "
         "alias delete ALIAS | alias list | import FILE [ROOTFS] [--alias ALIAS] | export IMAGE "
         "DIR | copy REMOTE:IMAGE local: [--alias ALIAS] [--auto-update] | refresh [--due]",
         "Manage the local image store.", verb_image_or_auto_update},
        {"server", 1, any, "server show [--json] | get KEY | set KEY=VALUE... | unset KEY...",
         "lodged's own keys (images.auto_update_interval).", verb_server},
        {"publish", 1, 1, "publish NAME [--alias ALIAS] [--compression gzip|xz|zstd|none]",
         "Make an image of a stopped container in the store.", verb_publish},
        {"export", 2, 2, "export NAME FILE [--instance-only] [--compression gzip|xz|zstd|none]",
         "Back up a stopped container (and its snapshots) in LXD's backup format.", verb_export},
        {"import", 1, 2, "import FILE [NAME]", "Make a container from a backup (lodge's or LXD's).",
         verb_import},
        {"remote", 1, 3,
         "remote add NAME URL [--protocol simplestreams|lxd] [--public] [--ca FILE] | list | "
         "remove NAME | rename NAME NEW",
         "Manage image servers.", verb_remote},
        {"delete", 1, any, "delete NAME... [--force]",
         "Delete containers (--force: a running one is killed first).", verb_delete},
        {"start", 1, any, "start NAME...", "Start containers.", verb_start},
        {"stop", 1, any, "stop NAME... [--timeout SECONDS] [--force]",
         "Stop containers: the stop signal, SIGKILL after the timeout (--force: at once).",
         verb_stop},
        {"restart", 1, any, "restart NAME... [--timeout SECONDS]",
         "Stop and start containers again.", verb_restart},
        {"reboot", 1, any, "reboot NAME...", "Send the reboot signal to PID 1.", verb_reboot},
        {"kill", 1, any, "kill NAME... [--signal SIGNAL]", "Send a signal (SIGTERM) to PID 1.",
         verb_kill},
        {"config", 2, any,
         "config get NAME KEY | set NAME KEY=VALUE... | unset NAME KEY... | "
         "show NAME [--expanded] [--json] | edit NAME",
         "Read and change a container's configuration.", verb_config},
        {"device", 2, any,
         "device add NAME DEVICE [TYPE] [KEY=VALUE]... | remove NAME DEVICE | list NAME [--json]",
         "Add, remove and list a container's devices.", verb_device},
        {"console", 1, 1, "console NAME [--show-log]",
         "Attach to the console (Ctrl+a q detaches); --show-log prints its log.", verb_console},
        {"exec", 1, 1, "exec NAME [-t|-T] [--env KEY=VALUE]... [--cwd DIR] -- COMMAND...",
         "Run a command in the container; exits with its status.", verb_exec},
        {"shell", 1, 1, "shell NAME [--env KEY=VALUE]... [--cwd DIR]",
         "A login shell (/bin/sh -l) in the container, on a terminal.", verb_shell},
        {"network", 1, any, network_usage,
         "Managed networks: a bridge with DHCP, DNS and NAT (lodge-network(7)).",
         [](const Options& o, sd_bus* bus) {
             return verb_network({o.args, o.json, o.legend, o.quiet}, bus);
         }},
        {"cluster", 1, 1, "cluster status [--json] [--no-legend]",
         "Where container resources run, as Pacemaker says (lodge-cluster(7)).",
         [](const Options& o, sd_bus*) {
             if (o.args[1] != "status")
                 return fail("Unknown command \"cluster " + o.args[1] + "\"; see lodgectl --help");
             return cluster_status(o.host, o.json, o.legend);
         }},
        {"snapshot", 2, any,
         "snapshot create NAME [SNAPSHOT] [--stateless] | list NAME | show NAME SNAPSHOT | "
         "delete NAME SNAPSHOT... | rename NAME SNAPSHOT NEW",
         "Take, list, show, delete and rename snapshots (rootfs and config).", verb_snapshot},
        {"restore", 2, 2, "restore NAME SNAPSHOT [--force]",
         "Restore a snapshot (--force: a running container is killed first).", verb_restore},
        {"copy", 2, 2, "copy SOURCE[/SNAPSHOT] NAME [-c KEY=VALUE]... [--no-snapshots]",
         "Copy a container or a snapshot (new MACs and instance-id).", verb_copy},
        {"rename", 2, 2, "rename NAME NEW_NAME",
         "Rename a stopped container (snapshots, log and autostart go along).", verb_rename},
        {"file", 2, any,
         "file push SOURCE... NAME/PATH [-p] [-r] [--uid UID] [--gid GID] [--mode MODE] | "
         "pull NAME/PATH... DESTINATION [-r] | delete NAME/PATH... | edit NAME/PATH | "
         "mount NAME[/PATH] DIR",
         "Copy files into and out of a container, delete, edit or mount them.", verb_file},
        {"enable", 1, any, "enable NAME...", "Start containers at boot (lodge@NAME.service).",
         verb_enable_or_disable},
        {"disable", 1, any, "disable NAME...", "Do not start containers at boot.",
         verb_enable_or_disable},
    };
    return table;
}

const Verb* find_verb(const std::string& name) {
    for (auto& v : verbs())
        if (name == v.name)
            return &v;
    return nullptr;
}

void usage() {
    std::printf("lodgectl [OPTIONS] COMMAND ...\n\nCommands:\n");
    for (auto& v : verbs())
        std::printf("  %s\n      %s\n", v.usage, v.summary);
    std::printf("\nOptions:\n"
                "  --json               JSON output (every command that prints something)\n"
                "  --no-legend          No table header and footer\n"
                "  -q, --quiet          Less output (list: names only)\n"
                "  -H, --host [USER@]HOST  Operate on a remote host over ssh\n"
                "  -h, --help           This help; COMMAND --help: that command's\n\n"
                "Exit status: 0 on success, 1 on failure; exec and shell exit with the command's\n"
                "status. See lodgectl(1).\n");
}

void verb_usage(const Verb& v) {
    std::printf("Usage: lodgectl %s\n\n%s\n", v.usage, v.summary);
}

} // namespace
} // namespace lodge::ctl

int main(int argc, char** argv) {
    using namespace lodge::ctl;
    Options o;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        auto value = [&](const std::string& key) -> bool {
            if (a == "--" + key) {
                if (i + 1 >= argc)
                    return false;
                o.values[key] = argv[++i];
                return true;
            }
            if (a.rfind("--" + key + "=", 0) == 0) {
                o.values[key] = a.substr(key.size() + 3);
                return true;
            }
            return false;
        };
        if (a == "--") {
            for (int j = i + 1; j < argc; j++)
                o.command.push_back(argv[j]);
            break;
        }
        if (a == "--json")
            o.json = true;
        else if (a == "-t" || a == "--tty")
            o.pty = 1;
        else if (a == "-T" || a == "--no-tty")
            o.pty = 0;
        else if ((a == "--env" || a == "-e") && i + 1 < argc)
            o.env.push_back(argv[++i]);
        else if (a.rfind("--env=", 0) == 0)
            o.env.push_back(a.substr(6));
        else if (a == "--no-legend")
            o.legend = false;
        else if (a == "-q" || a == "--quiet")
            o.quiet = true;
        else if (a == "-f" || a == "--force")
            o.force = true;
        else if (a == "--show-log")
            o.show_log = true;
        else if (a == "--no-snapshots" || a == "--expanded" || a == "--stateless" ||
                 a == "--stateful" || a == "--instance-only" || a == "--auto-update" ||
                 a == "--due")
            o.values[a.substr(2)] = "1";
        else if (a == "-p" || a == "--create-dirs")
            o.values["parents"] = "1";
        else if (a == "-r" || a == "--recursive")
            o.values["recursive"] = "1";
        else if ((a == "-H" || a == "--host") && i + 1 < argc)
            o.host = argv[++i];
        else if (a == "-c" && i + 1 < argc)
            o.config.push_back(argv[++i]);
        else if (a == "-h" || a == "--help")
            o.help = true;
        else if (value("timeout") || value("signal") || value("cwd") || value("network") ||
                 value("uid") || value("gid") || value("mode") || value("alias") ||
                 value("protocol") || value("ca") || value("compression"))
            continue;
        else if (a == "--privileged" || a == "--public")
            o.values[a.substr(2)] = "true";
        else if (a.size() > 1 && a[0] == '-' && a != "-")
            return fail("Unknown option " + a);
        else
            o.args.push_back(a);
    }
    const Verb* verb = o.args.empty() ? nullptr : find_verb(o.args[0]);
    if (o.help) {
        if (verb)
            verb_usage(*verb);
        else
            usage();
        return 0;
    }
    if (o.args.empty()) {
        usage();
        return 1;
    }
    if (!verb)
        return fail("Unknown command \"" + o.args[0] + "\"; see lodgectl --help");
    size_t n = o.args.size() - 1;
    if (n < verb->min_args || n > verb->max_args)
        return fail(std::string("Usage: lodgectl ") + verb->usage);
    if (!o.host.empty() && needs_fds(o.args))
        return run_remote_lodgectl(
            o.host, o.pty == 1 || (o.pty == -1 && o.args[0] != "create" && isatty(0)), argc, argv);
    if (o.args[0] == "cluster") // Pacemaker's state, not lodged's: no bus needed
        return verb->run(o, nullptr);
    lodge::BusPtr bus = open_bus(o);
    if (!bus)
        return 1;
    return verb->run(o, bus.get());
}
