#include "ctl/cluster.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <fcntl.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <spawn.h>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

extern char** environ;

namespace lodge::ctl {
namespace {

int fail(const std::string& msg) {
    std::fprintf(stderr, "%s\n", msg.c_str());
    return 1;
}

// Runs argv (found on PATH) and collects its stdout; stderr goes to ours. Returns its exit
// status, 127 when it could not be run (errno in *spawn_error).
int run_capture(const std::vector<std::string>& args, std::string& out, int* spawn_error) {
    int pipefd[2];
    if (::pipe2(pipefd, O_CLOEXEC) < 0) {
        *spawn_error = errno;
        return 127;
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, pipefd[1], STDOUT_FILENO);
    std::vector<char*> argv;
    for (auto& a : args)
        argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    pid_t pid = -1;
    int r = posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(pipefd[1]);
    if (r != 0) {
        ::close(pipefd[0]);
        *spawn_error = r;
        return 127;
    }
    char buf[65536];
    ssize_t n;
    while ((n = ::read(pipefd[0], buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR))
        if (n > 0)
            out.append(buf, static_cast<size_t>(n));
    ::close(pipefd[0]);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    *spawn_error = 0;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// A command on this node, or on `host` over ssh (ssh's own options and keys apply).
int run_on(const std::string& host, std::vector<std::string> args, std::string& out,
           int* spawn_error) {
    if (!host.empty())
        args.insert(args.begin(), {"ssh", "-xT", "-oBatchMode=yes", host, "--"});
    return run_capture(args, out, spawn_error);
}

// libxml2 is loaded here, when `cluster status` needs it, not linked: with ICU behind it, it
// would cost every lodgectl run (start, exec, ...) about a millisecond of loading.
struct LibXml {
    decltype(&::xmlReadMemory) read_memory = nullptr;
    decltype(&::xmlFreeDoc) free_doc = nullptr;
    decltype(&::xmlGetProp) get_prop = nullptr;
    decltype(&::xmlNodeGetContent) node_get_content = nullptr;
    decltype(&::xmlDocGetRootElement) root_element = nullptr;
    std::string error; // why it could not be loaded
};

const LibXml& libxml() {
    static const LibXml lib = [] {
        LibXml x;
        void* h = ::dlopen("libxml2.so.2", RTLD_NOW | RTLD_LOCAL);
        auto sym = [&](auto& fn, const char* name) {
            if (h &&
                !(fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(::dlsym(h, name))) &&
                x.error.empty())
                x.error = std::string("libxml2 has no ") + name;
        };
        if (!h)
            x.error = std::string("Cannot load libxml2 (Debian's libxml2): ") + ::dlerror();
        sym(x.read_memory, "xmlReadMemory");
        sym(x.free_doc, "xmlFreeDoc");
        sym(x.get_prop, "xmlGetProp");
        sym(x.node_get_content, "xmlNodeGetContent");
        sym(x.root_element, "xmlDocGetRootElement");
        return x;
    }();
    return lib;
}

// What libxml2 allocates for us is released with xmlFree, which is free() unless someone
// called xmlMemSetup (nobody here does).
void xml_free(xmlChar* p) {
    std::free(p);
}

struct DocFree {
    void operator()(xmlDoc* d) const { libxml().free_doc(d); }
};
using Doc = std::unique_ptr<xmlDoc, DocFree>;

Doc parse(const std::string& text) {
    return Doc(libxml().read_memory(text.data(), static_cast<int>(text.size()), "crm_mon.xml",
                                    nullptr,
                                    XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING));
}

bool is(const xmlNode* n, const char* name) {
    return n->type == XML_ELEMENT_NODE &&
           std::strcmp(reinterpret_cast<const char*>(n->name), name) == 0;
}

std::string attr(const xmlNode* n, const char* name) {
    xmlChar* v = libxml().get_prop(n, BAD_CAST name);
    std::string s = v ? reinterpret_cast<const char*>(v) : "";
    xml_free(v);
    return s;
}

const xmlNode* child(const xmlNode* n, const char* name) {
    for (const xmlNode* c = n ? n->children : nullptr; c; c = c->next)
        if (is(c, name))
            return c;
    return nullptr;
}

struct Resource {
    std::string id, agent, role, container;
    std::vector<std::string> nodes;
    bool failed = false, managed = true;
};

// Every primitive, wherever it sits (groups, clones, bundles).
void collect(const xmlNode* n, std::vector<Resource>& out) {
    for (const xmlNode* c = n->children; c; c = c->next) {
        if (is(c, "resource")) {
            Resource r;
            r.id = attr(c, "id");
            r.agent = attr(c, "resource_agent");
            r.role = attr(c, "role");
            r.failed = attr(c, "failed") == "true";
            r.managed = attr(c, "managed") != "false";
            for (const xmlNode* on = c->children; on; on = on->next)
                if (is(on, "node"))
                    r.nodes.push_back(attr(on, "name"));
            out.push_back(std::move(r));
        } else if (c->type == XML_ELEMENT_NODE) {
            collect(c, out);
        }
    }
}

// Resource id -> its "name" parameter, for ocf:lodge:container primitives in the CIB.
void container_names(const xmlNode* n, std::map<std::string, std::string>& out) {
    for (const xmlNode* c = n->children; c; c = c->next) {
        if (c->type != XML_ELEMENT_NODE)
            continue;
        if (is(c, "primitive") && attr(c, "class") == "ocf" && attr(c, "provider") == "lodge" &&
            attr(c, "type") == "container") {
            for (const xmlNode* ia = c->children; ia; ia = ia->next)
                if (is(ia, "instance_attributes"))
                    for (const xmlNode* nv = ia->children; nv; nv = nv->next)
                        if (is(nv, "nvpair") && attr(nv, "name") == "name")
                            out[attr(c, "id")] = attr(nv, "value");
        } else {
            container_names(c, out);
        }
    }
}

std::string join(const std::vector<std::string>& v) {
    std::string s;
    for (auto& x : v)
        s += (s.empty() ? "" : ",") + x;
    return s.empty() ? "-" : s;
}

} // namespace

int cluster_status(const std::string& host, bool json, bool legend) {
    std::string text;
    int spawn_error = 0;
    int rc = run_on(host, {"crm_mon", "--one-shot", "--inactive", "--output-as=xml"}, text,
                    &spawn_error);
    std::string where = host.empty() ? "this node" : host;
    if (rc == 127 && spawn_error)
        return fail(std::string("Cannot run ") + (host.empty() ? "crm_mon" : "ssh") + ": " +
                    std::strerror(spawn_error) +
                    (host.empty() ? " (Pacemaker is not installed on this node: Debian's "
                                    "pacemaker-cli-utils; see lodge-cluster(7))"
                                  : ""));
    if (rc == 127)
        return fail("crm_mon is not installed on " + where +
                    " (Pacemaker: Debian's pacemaker-cli-utils; see lodge-cluster(7))");
    if (rc == 255 && !host.empty() && text.empty())
        return fail("Cannot reach " + host + " over ssh (its error is above)");
    if (!libxml().error.empty())
        return fail(libxml().error);
    Doc doc = parse(text);
    const xmlNode* root = doc ? libxml().root_element(doc.get()) : nullptr;
    if (!root)
        return fail("crm_mon on " + where + " failed (exit status " + std::to_string(rc) +
                    ") and gave no cluster state: is Pacemaker running there?");
    if (const xmlNode* status = child(root, "status"); status && attr(status, "code") != "0") {
        std::string msg = attr(status, "message");
        if (const xmlNode* errors = child(status, "errors"))
            for (const xmlNode* e = errors->children; e; e = e->next)
                if (is(e, "error")) {
                    xmlChar* t = libxml().node_get_content(e);
                    msg += std::string(msg.empty() ? "" : ": ") + reinterpret_cast<char*>(t);
                    xml_free(t);
                }
        return fail("Pacemaker on " + where + " gives no cluster state: " + msg);
    }
    const xmlNode* summary = child(root, "summary");
    const xmlNode* nodes = child(root, "nodes");
    const xmlNode* resources = child(root, "resources");
    if (!summary || !nodes)
        return fail("crm_mon on " + where + " gave no cluster state (exit status " +
                    std::to_string(rc) + ")");

    std::vector<Resource> all;
    if (resources)
        collect(resources, all);
    // crm_mon does not show parameters: the container's name comes from the CIB.
    std::map<std::string, std::string> names;
    std::string cib;
    if (run_on(host, {"cibadmin", "--query", "--scope", "resources"}, cib, &spawn_error) == 0)
        if (Doc d = parse(cib); d && libxml().root_element(d.get()))
            container_names(libxml().root_element(d.get()), names);
    std::vector<Resource> ours;
    for (auto& r : all)
        if (r.agent == "ocf:lodge:container" || r.agent == "ocf::lodge:container") {
            auto it = names.find(r.id);
            r.container = it != names.end() ? it->second : r.id;
            ours.push_back(r);
        }

    const xmlNode* dc = child(summary, "current_dc");
    const xmlNode* options = child(summary, "cluster_options");
    std::string dc_name = dc && attr(dc, "present") == "true" ? attr(dc, "name") : "";
    bool quorate = dc && attr(dc, "with_quorum") == "true";
    std::string stonith = options ? attr(options, "stonith-enabled") : "";
    struct NodeState {
        std::string name, state;
    };
    std::vector<NodeState> node_list;
    for (const xmlNode* n = nodes->children; n; n = n->next) {
        if (!is(n, "node"))
            continue;
        std::string state = attr(n, "online") == "true" ? "online" : "offline";
        if (attr(n, "standby") == "true")
            state += " (standby)";
        if (attr(n, "maintenance") == "true")
            state += " (maintenance)";
        if (attr(n, "unclean") == "true")
            state += " (unclean)";
        node_list.push_back({attr(n, "name"), state});
    }

    if (json) {
        nlohmann::json j;
        j["dc"] = dc_name;
        j["quorate"] = quorate;
        j["stonith_enabled"] = stonith == "true";
        j["nodes"] = nlohmann::json::array();
        for (auto& n : node_list)
            j["nodes"].push_back({{"name", n.name}, {"state", n.state}});
        j["resources"] = nlohmann::json::array();
        for (auto& r : ours)
            j["resources"].push_back({{"id", r.id},
                                      {"container", r.container},
                                      {"role", r.role},
                                      {"nodes", r.nodes},
                                      {"failed", r.failed},
                                      {"managed", r.managed}});
        std::printf("%s\n", j.dump(2).c_str());
        return 0;
    }
    if (legend)
        std::printf("Cluster: %s, DC %s, stonith %s\n\n", quorate ? "quorate" : "NOT quorate",
                    dc_name.empty() ? "none" : dc_name.c_str(),
                    stonith == "true" ? "enabled" : "DISABLED");
    size_t w = 4;
    for (auto& n : node_list)
        w = std::max(w, n.name.size());
    if (legend)
        std::printf("%-*s  %s\n", static_cast<int>(w), "NODE", "STATE");
    for (auto& n : node_list)
        std::printf("%-*s  %s\n", static_cast<int>(w), n.name.c_str(), n.state.c_str());
    size_t wi = 8, wc = 9, wr = 5;
    for (auto& r : ours) {
        wi = std::max(wi, r.id.size());
        wc = std::max(wc, r.container.size());
        wr = std::max(wr, r.role.size() + (r.failed ? 9 : 0) + (r.managed ? 0 : 12));
    }
    std::printf("\n");
    if (legend)
        std::printf("%-*s  %-*s  %-*s  %s\n", static_cast<int>(wi), "RESOURCE",
                    static_cast<int>(wc), "CONTAINER", static_cast<int>(wr), "STATE", "NODE");
    for (auto& r : ours) {
        std::string state =
            r.role + (r.failed ? " (failed)" : "") + (r.managed ? "" : " (unmanaged)");
        std::printf("%-*s  %-*s  %-*s  %s\n", static_cast<int>(wi), r.id.c_str(),
                    static_cast<int>(wc), r.container.c_str(), static_cast<int>(wr), state.c_str(),
                    join(r.nodes).c_str());
    }
    if (legend)
        std::printf("\n%zu container resource(s).\n", ours.size());
    return 0;
}

} // namespace lodge::ctl
