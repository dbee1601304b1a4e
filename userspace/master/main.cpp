// steerchat: the master process. See docs/architecture.md.
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <utility>
#include <vector>

#include <fmt/core.h>

#include "master/control.hpp"
#include "master/options.hpp"
#include "master/supervisor.hpp"
#include "util/log.hpp"

int main(int argc, char** argv) {
    // `steerchat ctl ...`: a client of a running master (master/control.hpp).
    if (argc > 1 && std::strcmp(argv[1], "ctl") == 0)
        return steerchat::master::run_ctl(argc - 1, argv + 1);
    // `steerchat balance [options] -- COMMAND ...`: the same master over copies of COMMAND.
    if (argc > 1 && std::strcmp(argv[1], "balance") == 0) {
        auto b = steerchat::master::parse_balance_options(argc, argv);
        if (!b.options) {
            std::fputs(b.message.c_str(), b.exit_code == 0 ? stdout : stderr);
            std::fputc('\n', b.exit_code == 0 ? stdout : stderr);
            return b.exit_code;
        }
        steerchat::log::configure(b.options->log_level, b.options->log_format);
        try {
            steerchat::master::Supervisor master(*b.options, {}, std::move(b.balance));
            return master.run();
        } catch (const std::exception& e) {
            steerchat::log::error("{}", e.what());
            return 1;
        }
    }
    auto parsed = steerchat::master::parse_options(argc, argv);
    if (!parsed.options) {
        std::fputs(parsed.message.c_str(), parsed.exit_code == 0 ? stdout : stderr);
        std::fputc('\n', parsed.exit_code == 0 ? stdout : stderr);
        return parsed.exit_code;
    }
    steerchat::log::configure(parsed.options->log_level, parsed.options->log_format);
    try {
        steerchat::master::Supervisor master(*parsed.options,
                                             std::vector<std::string>(argv, argv + argc));
        return master.run();
    } catch (const std::exception& e) {
        steerchat::log::error("{}", e.what());
        return 1;
    }
}
