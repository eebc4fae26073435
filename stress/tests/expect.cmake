# SPDX-License-Identifier: MIT
# stress/tests/expect.cmake -- runs a weft::stress program and checks how it
# ended (ctest entries of stress/CMakeLists.txt):
#
#   cmake -DCOMMAND="prog|--flag|..." -DEXIT=<code> [-DSTDERR=<regex>]
#         [-DSTDOUT=<regex>] [-DJSON=<file>] [-DJSON_CHECKS=<checks>]
#         [-DREPLAY=ON] -P expect.cmake
#
# COMMAND: the program and its arguments, separated by '|'.  EXIT: the exit
# code it must end with, exactly.  JSON: the --json file to read with CMake's
# own JSON parser (string(JSON), a real parser: no regexes over the text);
# JSON_CHECKS: '|'-separated "path=value" pairs, the path's keys separated by
# '/' (numbers index arrays), e.g. "exit_code=1|failures/0/hang=OFF"; a value
# "*" only requires the path to exist, "null" wants a JSON null.  REPLAY=ON: the first failure's
# "replay" command (split at spaces) is run too, must exit with EXIT again,
# and its output must name the same first violation.
if(NOT DEFINED COMMAND OR NOT DEFINED EXIT)
  message(FATAL_ERROR "expect.cmake: give -DCOMMAND=... and -DEXIT=...")
endif()
string(REPLACE "|" ";" _cmd "${COMMAND}")
if(DEFINED JSON)
  file(REMOVE "${JSON}")
endif()
execute_process(COMMAND ${_cmd} RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _err)
message("---- stdout\n${_out}---- stderr\n${_err}---- exit code ${_rc}")
if(NOT "${_rc}" STREQUAL "${EXIT}")
  message(FATAL_ERROR "exit code ${_rc}, expected ${EXIT}")
endif()
if(DEFINED STDERR AND NOT _err MATCHES "${STDERR}")
  message(FATAL_ERROR "stderr does not match '${STDERR}'")
endif()
if(DEFINED STDOUT AND NOT _out MATCHES "${STDOUT}")
  message(FATAL_ERROR "stdout does not match '${STDOUT}'")
endif()
if(NOT DEFINED JSON)
  return()
endif()

if(NOT EXISTS "${JSON}")
  message(FATAL_ERROR "no JSON report at ${JSON}")
endif()
file(READ "${JSON}" _json)
string(JSON _type ERROR_VARIABLE _jerr TYPE "${_json}")
if(_jerr)
  message(FATAL_ERROR "${JSON} is not JSON: ${_jerr}\n${_json}")
endif()
message("---- ${JSON}\n${_json}")
if(DEFINED JSON_CHECKS)
  string(REPLACE "|" ";" _checks "${JSON_CHECKS}")
  foreach(_check IN LISTS _checks)
    if(NOT _check MATCHES "^([^=]+)=(.*)$")
      message(FATAL_ERROR "bad JSON check '${_check}'")
    endif()
    set(_want "${CMAKE_MATCH_2}")
    string(REPLACE "/" ";" _path "${CMAKE_MATCH_1}")
    string(JSON _got ERROR_VARIABLE _jerr GET "${_json}" ${_path})
    if(_jerr)
      message(FATAL_ERROR "${JSON}: no ${CMAKE_MATCH_1}: ${_jerr}")
    endif()
    if(_want STREQUAL "null")  # GET gives "" for null: ask for the type
      string(JSON _got TYPE "${_json}" ${_path})
      string(TOLOWER "${_got}" _got)
    endif()
    if(NOT _want STREQUAL "*" AND NOT "${_got}" STREQUAL "${_want}")
      message(FATAL_ERROR "${JSON}: ${CMAKE_MATCH_1} is '${_got}', expected '${_want}'")
    endif()
  endforeach()
endif()

if(REPLAY)
  string(JSON _replay GET "${_json}" failures 0 replay)
  string(JSON _first GET "${_json}" failures 0 first)
  separate_arguments(_replay_cmd UNIX_COMMAND "${_replay}")
  message("---- replay: ${_replay}")
  execute_process(COMMAND ${_replay_cmd} RESULT_VARIABLE _rc OUTPUT_VARIABLE _out
                  ERROR_VARIABLE _err)
  message("---- stdout\n${_out}---- stderr\n${_err}---- exit code ${_rc}")
  if(NOT "${_rc}" STREQUAL "${EXIT}")
    message(FATAL_ERROR "the replay exited ${_rc}, expected ${EXIT}")
  endif()
  string(FIND "${_out}" "${_first}" _at)
  if(_at EQUAL -1)
    message(FATAL_ERROR "the replay did not report the same first violation: ${_first}")
  endif()
endif()
