# Warnings and sanitizers, applied to every Dragon target through dragon_options.
add_library(dragon_options INTERFACE)
target_compile_options(dragon_options INTERFACE
  -Wall -Wextra -Wshadow -Wnon-virtual-dtor -Wold-style-cast -Wcast-align
  -Wunused -Woverloaded-virtual -Wconversion -Wsign-conversion
  -Wdouble-promotion -Wformat=2 -Wimplicit-fallthrough)
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  target_compile_options(dragon_options INTERFACE -Wduplicated-cond -Wlogical-op)
endif()
if(DRAGON_WERROR)
  target_compile_options(dragon_options INTERFACE -Werror)
endif()

if(DRAGON_SANITIZE)
  if(DRAGON_SANITIZE STREQUAL "address")
    set(_san address,undefined)
  elseif(DRAGON_SANITIZE STREQUAL "thread")
    set(_san thread)
  elseif(DRAGON_SANITIZE STREQUAL "undefined")
    set(_san undefined)
  else()
    message(FATAL_ERROR "DRAGON_SANITIZE must be address, thread or undefined, not '${DRAGON_SANITIZE}'")
  endif()
  add_compile_options(-fsanitize=${_san} -fno-omit-frame-pointer -fno-sanitize-recover=all)
  add_link_options(-fsanitize=${_san})
endif()

# dragon_add_library(NAME ALIAS SOURCES...): a component library with the
# include/ folder beside it as its public interface.
function(dragon_component_library name alias)
  add_library(${name} ${ARGN})
  add_library(${alias} ALIAS ${name})
  target_include_directories(${name} PUBLIC
    $<BUILD_INTERFACE:${CMAKE_CURRENT_SOURCE_DIR}/include>
    $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
  target_link_libraries(${name} PRIVATE dragon_options)
endfunction()

# dragon_add_gtest(NAME LABEL SOURCES... LIBS ...): one gtest binary, its tests
# registered with ctest under LABEL.
function(dragon_add_gtest name label)
  cmake_parse_arguments(T "" "" "SOURCES;LIBS" ${ARGN})
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE ${T_LIBS} GTest::gtest_main dragon_options)
  gtest_discover_tests(${name} PROPERTIES LABELS ${label} DISCOVERY_TIMEOUT 60)
endfunction()
