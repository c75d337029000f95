#include "runtime/setup/security.hpp"
#include "common/log.hpp"
#include "common/validate.hpp"

#include <cerrno>
#include <memory>
#include <seccomp.h>
#include <sys/capability.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <vector>

namespace lodge::runtime {
namespace {

std::vector<std::string> split_syscalls(const std::string& v) {
    std::vector<std::string> out;
    std::string cur;
    for (char c : v) {
        if (c == '\n' || c == ' ' || c == ',') {
            if (!cur.empty())
                out.push_back(cur);
            cur.clear();
        } else {
            cur += c;
        }
    }
    if (!cur.empty())
        out.push_back(cur);
    return out;
}

struct FilterDeleter {
    void operator()(void* ctx) const { seccomp_release(ctx); }
};
using Filter = std::unique_ptr<void, FilterDeleter>;

// libseccomp sets no_new_privs before loading unless told not to; PID 1 holds CAP_SYS_ADMIN
// (in its user namespace) and needs no such crutch, and with it setuid programs in the guest
// (su, sudo, ping) stop working, which LXD's containers do not do.
int keep_setuid_working(scmp_filter_ctx ctx) {
    return seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0);
}

int add_compat_arches(scmp_filter_ctx ctx) {
    if (seccomp_arch_native() != SCMP_ARCH_X86_64)
        return 0;
    // The int 0x80 and x32 entry points must see the same rules.
    for (uint32_t arch : {SCMP_ARCH_X86, SCMP_ARCH_X32}) {
        int r = seccomp_arch_add(ctx, arch);
        if (r < 0 && r != -EEXIST)
            return r;
    }
    return 0;
}

} // namespace

std::string check_syscall_policy(const ContainerConfig& c) {
    for (auto& name : split_syscalls(c.get("security.syscalls.deny")))
        if (seccomp_syscall_resolve_name(name.c_str()) == __NR_SCMP_ERROR)
            return "Invalid value for \"security.syscalls.deny\": unknown syscall \"" + name + "\"";
    return {};
}

Result<> load_seccomp(const ContainerConfig& c) {
    bool deny_default = c.get_bool("security.syscalls.deny_default", true);
    auto deny = split_syscalls(c.get("security.syscalls.deny"));
    bool deny_compat = c.get_bool("security.syscalls.deny_compat", false);

    if (deny_default || !deny.empty()) {
        Filter ctx(seccomp_init(SCMP_ACT_ALLOW));
        if (!ctx)
            return log_error_value(ENOMEM, "Failed to allocate a seccomp filter");
        if (int r = keep_setuid_working(ctx.get()); r < 0)
            return log_error_value(r, "Failed to configure the seccomp filter");
        if (int r = add_compat_arches(ctx.get()); r < 0)
            return log_error_value(r, "Failed to add compat architectures to the seccomp filter");
        if (deny_default) {
            for (const char* name : {"kexec_load", "open_by_handle_at", "init_module",
                                     "finit_module", "delete_module"}) {
                int nr = seccomp_syscall_resolve_name(name);
                if (nr == __NR_SCMP_ERROR)
                    continue;
                if (int r = seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(ENOSYS), nr, 0); r < 0)
                    return log_error_value(r, "Failed to add seccomp rule for %s", name);
            }
            int r = seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(EACCES), SCMP_SYS(umount2), 1,
                                     SCMP_A1(SCMP_CMP_MASKED_EQ, MNT_FORCE, MNT_FORCE));
            if (r < 0)
                return log_error_value(r, "Failed to add the forced-unmount seccomp rule");
        }
        for (auto& name : deny) {
            int nr = seccomp_syscall_resolve_name(name.c_str());
            if (nr == __NR_SCMP_ERROR)
                return log_error_value(EINVAL, "Unknown syscall \"%s\" in security.syscalls.deny",
                                       name.c_str());
            // LXC's deny lines without an action kill the offender (init: SIGSYS).
            int r = seccomp_rule_add(ctx.get(), SCMP_ACT_KILL_PROCESS, nr, 0);
            if (r < 0 && r != -EEXIST)
                return log_error_value(r, "Failed to add seccomp rule for %s", name.c_str());
        }
        if (int r = seccomp_load(ctx.get()); r < 0)
            return log_error_value(r, "Failed to load the seccomp filter");
    }

    if (deny_compat) {
        // A filter that knows only the native architecture turns every foreign-ABI syscall
        // into ENOSYS through the bad-arch action.
        Filter ctx(seccomp_init(SCMP_ACT_ALLOW));
        if (!ctx)
            return log_error_value(ENOMEM, "Failed to allocate a seccomp filter");
        if (int r = keep_setuid_working(ctx.get()); r < 0)
            return log_error_value(r, "Failed to configure the seccomp filter");
        if (int r = seccomp_attr_set(ctx.get(), SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_ERRNO(ENOSYS));
            r < 0)
            return log_error_value(r, "Failed to set the seccomp bad-arch action");
        if (int r = seccomp_load(ctx.get()); r < 0)
            return log_error_value(r, "Failed to load the compat seccomp filter");
    }
    return {};
}

Result<> drop_capabilities(const ContainerConfig& c) {
    if (!c.privileged())
        return {};
    const cap_value_t drop[] = {CAP_SYS_TIME, CAP_SYS_MODULE, CAP_SYS_RAWIO, CAP_MAC_ADMIN,
                                CAP_MAC_OVERRIDE};
    for (cap_value_t cap : drop)
        if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
            return log_error_value(errno, "Failed to drop capability %d from the bounding set",
                                   cap);
    cap_t caps = cap_get_proc();
    if (!caps)
        return log_error_value(errno, "Failed to read capabilities");
    int r = cap_set_flag(caps, CAP_INHERITABLE, 5, drop, CAP_CLEAR);
    if (r == 0)
        r = cap_set_flag(caps, CAP_PERMITTED, 5, drop, CAP_CLEAR);
    if (r == 0)
        r = cap_set_flag(caps, CAP_EFFECTIVE, 5, drop, CAP_CLEAR);
    if (r == 0 && cap_set_proc(caps) < 0)
        r = -errno;
    cap_free(caps);
    if (r < 0)
        return log_error_value(r, "Failed to drop capabilities");
    return {};
}

} // namespace lodge::runtime
