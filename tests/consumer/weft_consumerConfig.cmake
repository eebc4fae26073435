# SPDX-License-Identifier: MIT
# find_package(weft_consumer): the exported library weft_consumer::answers,
# which links weft::weft, found here with find_dependency.
include(CMakeFindDependencyMacro)
find_dependency(weft CONFIG)
include("${CMAKE_CURRENT_LIST_DIR}/weft_consumerTargets.cmake")
