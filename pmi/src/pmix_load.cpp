// Loading the PMIx server plugin (libdragon_pmix.so) on first use.
#include <dlfcn.h>

#include "dragon/pmi/pmix.hpp"

namespace dragon::pmi::pmix {

Result<std::unique_ptr<Server>> load(const std::string& plugin, const std::string& tmpdir, const std::string& hostname,
                                     Post post, Upcalls upcalls) {
    // Kept loaded for the life of the process: OpenPMIx cannot be unloaded cleanly.
    void* handle = ::dlopen(plugin.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
        const char* why = ::dlerror();
        return make_error(Errc::not_found, "PMIx: cannot load {}: {}", plugin, why != nullptr ? why : "?");
    }
    auto create = reinterpret_cast<CreateFn>(::dlsym(handle, kCreateSymbol));
    if (create == nullptr) return make_error(Errc::protocol, "PMIx: {} has no {}", plugin, kCreateSymbol);
    std::string error;
    CreateArgs args{&tmpdir, &hostname, &post, &upcalls, &error};
    Server* s = create(&args);
    if (s == nullptr) return Error(Errc::system, error.empty() ? std::string("PMIx: the server did not start") : error);
    return std::unique_ptr<Server>(s);
}

}  // namespace dragon::pmi::pmix
