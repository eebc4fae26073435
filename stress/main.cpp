// SPDX-License-Identifier: MIT
// stress/main.cpp -- weft-stress: the engine's command line
// (weft::stress::main, stress/flags.cpp) over the built-in scenarios.
#include <weft/stress.hpp>

int main(int argc, char** argv) { return weft::stress::main(argc, argv); }
