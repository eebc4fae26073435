// SPDX-License-Identifier: MIT
// docs/integration.md's examples are compiled: every ```cpp block of it must be
// copied verbatim from one of the test sources next to this file, so that the
// page and the tests that run its examples cannot drift apart.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

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
  const std::string d = read_all(doc);
  int blocks = 0;
  for (std::size_t pos = d.find("```cpp\n"); pos != std::string::npos;
       pos = d.find("```cpp\n", pos)) {
    pos += 7;
    const std::size_t end = d.find("```\n", pos);
    ASSERT_NE(end, std::string::npos) << "unterminated ```cpp block in " << doc;
    const std::string block = d.substr(pos, end - pos);
    ++blocks;
    EXPECT_NE(sources.find(block), std::string::npos)
        << "this block of " << doc << " is in no tests/*.cpp file:\n"
        << block;
    pos = end + 4;
  }
  // The driven loop, blocking (2), stop tokens (2), oneTBB (2): a page that
  // lost its examples must not pass for lack of blocks to check.
  EXPECT_GE(blocks, 7) << "docs/integration.md lost its examples?";
}

}  // namespace
