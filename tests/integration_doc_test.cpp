// SPDX-License-Identifier: MIT
// docs/integration.md's examples are compiled: every ```cpp block of it must be
// copied verbatim from one of the test sources next to this file, so that the
// page and the tests that run its examples cannot drift apart.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "test_support.hpp"

namespace {

std::string read_all(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(IntegrationDocTest, EveryCppBlockIsCopiedFromATestSource) {
  namespace fs = std::filesystem;
  const fs::path here = fs::path(__FILE__).parent_path();
  const fs::path doc = here.parent_path() / "docs" / "integration.md";
  if (!fs::exists(doc)) GTEST_SKIP() << "sources not found next to " << here;
  std::string sources;
  for (const fs::directory_entry& e : fs::directory_iterator(here)) {
    if (e.path().extension() == ".cpp") sources += read_all(e.path());
  }
  const std::optional<std::vector<std::string>> blocks = weft_test::cpp_blocks(read_all(doc));
  ASSERT_TRUE(blocks.has_value()) << "unterminated ```cpp block in " << doc;
  for (const std::string& block : *blocks) {
    EXPECT_NE(sources.find(block), std::string::npos)
        << "this block of " << doc << " is in no tests/*.cpp file:\n"
        << block;
  }
  // The driven loop, blocking (2), stop tokens (2), oneTBB (2): a page that
  // lost its examples must not pass for lack of blocks to check.
  EXPECT_GE(blocks->size(), 7u) << "docs/integration.md lost its examples?";
}

}  // namespace
